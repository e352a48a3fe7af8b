package main

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/knftables"
)

// everyFeature is a snapshot that makes the compiler use every construct it can render.
func everyFeature() PolicyInput {
	in := journeyExample()
	web := map[string]string{"app": "web"}
	db := map[string]string{"app": "db"}
	udp := corev1.ProtocolUDP
	long := strings.Repeat("a-very-long-pod-name.", 11) + "x"
	in.Namespaces = append(in.Namespaces, mkNamespace("shop", map[string]string{"team": "shop"}))
	in.Pods = append(in.Pods,
		mkPod("shop", "web-0", "10.244.0.10", web, containerPort("http", 8080, corev1.ProtocolTCP)),
		mkPod("shop", long, "10.244.0.11", web, containerPort("http", 8081, corev1.ProtocolTCP)),
		mkPod("shop", "db-0", "10.244.1.12", db, onNode("kind-worker2"), containerPort("pg", 5432, corev1.ProtocolTCP)),
		mkPod("shop", "db-1.replica", "10.244.0.13", db, containerPort("pg", 6432, corev1.ProtocolTCP)),
	)
	in.Policies = append(in.Policies,
		mkPolicy("shop", "web", selOf(web),
			ingressRule(nil, named("http", ""), portRange(corev1.ProtocolTCP, 30000, 32767)),
			ingressRule(peers(ipBlock("0.0.0.0/0", "10.244.0.0/16"), nsPeer(sel("team", "shop"))),
				networkingv1.NetworkPolicyPort{Protocol: &udp}, portRange(corev1.ProtocolSCTP, 3868, 3870)),
			egressRule(peers(podPeer(selOf(db))), named("pg", "")),
			egressRule(peers(ipBlock("203.0.113.0/24")), tcp(443)),
			egressRule(nil)),
		mkPolicy("shop", "default-deny", sel(), types(networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress)),
	)
	return in
}

// TestTheGeneratedRulesetsAreAcceptedByTheKernel hands the generated transactions to the
// running kernel in check mode (`nft -c -f -`: the kernel validates the batch, then it is
// aborted; nothing changes). It catches syntax nft rejects and expressions the kernel lacks
// (such as the queue expression on kernels without CONFIG_NFT_QUEUE).
func TestTheGeneratedRulesetsAreAcceptedByTheKernel(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: `nft -c` hands the ruleset to the kernel, which requires CAP_NET_ADMIN")
	}
	nft, err := exec.LookPath("nft")
	if err != nil {
		t.Skip("nft is not on PATH")
	}

	// The first sync on a node, then a second one over it in the same batch: that exercises the
	// deletion of what the first one created.
	fake := knftablesFake()
	first := fake.NewTransaction()
	WritePolicyTransaction(first, Compile(everyFeature()), nil)
	if err := fake.Run(t.Context(), first); err != nil {
		t.Fatalf("fake nft: %v", err)
	}
	existing, err := fake.ListAll(t.Context())
	if err != nil {
		t.Fatalf("fake nft: %v", err)
	}
	second := fake.NewTransaction()
	WritePolicyTransaction(second, Compile(journeyExample()), existing)
	if !strings.Contains(second.String(), "delete chain inet kindnet-network-policies egress_shop_web-0") {
		t.Fatalf("the second sync does not delete the first one's chains:\n%s", second.String())
	}

	masq := knftables.NewFake(knftables.InetFamily, masqTableName).NewTransaction()
	v4, v6, err := parsePodSubnets("10.244.0.0/16,fd00:10:244::/56")
	if err != nil {
		t.Fatal(err)
	}
	WriteMasqTransaction(masq, v4, v6)

	disable := knftablesFake().NewTransaction()
	WritePolicyTableDeletion(disable)

	for name, text := range map[string]string{
		"policy (first sync)":        first.String(),
		"policy (first then second)": first.String() + second.String(),
		"policy table deletion":      disable.String(),
		"masquerade":                 masq.String(),
		"masquerade (re-asserted)":   masq.String() + masq.String(),
	} {
		cmd := exec.Command(nft, "-c", "-f", "-")
		cmd.Stdin = strings.NewReader(text)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Errorf("%s: the kernel rejects the ruleset: %v\n%s\nruleset:\n%s", name, err, out.String(), text)
		}
	}
}
