package main

import (
	"strings"
	"testing"

	"sigs.k8s.io/knftables"
)

func TestASyncReplacesEverythingTheTableHeldInOneTransactionButKeepsTheCounters(t *testing.T) {
	fake := knftablesFake()
	first := fake.NewTransaction()
	WritePolicyTransaction(first, Compile(everyFeature()), nil)
	first.Add(&knftables.Counter{Name: "stale-counter"}) // left by some older version
	if err := fake.Run(t.Context(), first); err != nil {
		t.Fatal(err)
	}
	existing, err := fake.ListAll(t.Context())
	if err != nil {
		t.Fatal(err)
	}

	second := fake.NewTransaction()
	WritePolicyTransaction(second, Compile(journeyExample()), existing)
	text := second.String()
	lines := strings.Split(strings.TrimSpace(text), "\n")
	// After the table and its counters are ensured, every chain is flushed and then every
	// chain but the base chain, every set and map is deleted, before anything is added again.
	ops := map[string]bool{}
	for _, l := range lines[3:] {
		if strings.HasPrefix(l, "add ") {
			break
		}
		if !strings.HasPrefix(l, "flush chain ") && !strings.HasPrefix(l, "delete ") {
			t.Errorf("unexpected operation before the re-adds: %q", l)
		}
		ops[l] = true
	}
	for _, name := range existing["chain"] {
		if !ops["flush chain inet kindnet-network-policies "+name] {
			t.Errorf("chain %s is not flushed", name)
		}
	}
	deletes := ops
	for kind, names := range existing {
		for _, name := range names {
			del := "delete " + kind + " inet kindnet-network-policies " + name
			keep := (kind == "chain" && name == policyForwardChain) ||
				(kind == "counter" && (name == ingressDeniedCounter || name == egressDeniedCounter))
			if keep == deletes[del] {
				t.Errorf("%s %s: deleted=%t, want %t", kind, name, deletes[del], !keep)
			}
		}
	}
	if err := fake.Run(t.Context(), second); err != nil {
		t.Fatalf("the second sync is inconsistent: %v", err)
	}
	after, err := fake.ListAll(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(sortedCopy(after["chain"]), " "); got != "forward ingress_journey_kafka-0" {
		t.Errorf("chains after the second sync: %s", got)
	}
	if got := strings.Join(sortedCopy(after["counter"]), " "); got != "egress-denied ingress-denied" {
		t.Errorf("counters after the second sync: %s", got)
	}
}

func TestChainNamesAreUnambiguousAndBounded(t *testing.T) {
	if a, b := podChainName("ingress", "a-b", "c"), podChainName("ingress", "a", "b-c"); a == b {
		t.Errorf("%q and %q collide", a, b)
	}
	long := podChainName("egress", "ns", strings.Repeat("x", 253))
	if len(long) > maxNameLen || !strings.HasPrefix(long, "egress_") {
		t.Errorf("long name: %q", long)
	}
}
