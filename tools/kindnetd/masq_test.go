package main

import (
	"strings"
	"testing"

	"sigs.k8s.io/knftables"
)

func TestPodSubnetIsParsedIntoIPv4AndIPv6CIDRs(t *testing.T) {
	v4, v6, err := parsePodSubnets(" 10.244.0.0/16, fd00:10:244::/56 ")
	if err != nil || len(v4) != 1 || len(v6) != 1 || v4[0].String() != "10.244.0.0/16" || v6[0].String() != "fd00:10:244::/56" {
		t.Errorf("got %v %v %v", v4, v6, err)
	}
	for _, bad := range []string{"", " , ", "10.244.0.0", "10.244.0.0/16,nonsense"} {
		if _, _, err := parsePodSubnets(bad); err == nil {
			t.Errorf("%q was accepted", bad)
		}
	}
}

func TestPodTrafficLeavingThePodSubnetsIsMasqueradedUnlessItIsForThisNode(t *testing.T) {
	v4, v6, err := parsePodSubnets("10.244.0.0/16,10.244.3.0/24,fd00:10:244::/56")
	if err != nil {
		t.Fatal(err)
	}
	tx := knftables.NewFake(knftables.InetFamily, masqTableName).NewTransaction()
	WriteMasqTransaction(tx, v4, v6)
	text := tx.String()
	for _, want := range []string{
		"add chain inet kindnet-ipmasq postrouting { type nat hook postrouting priority 100 ; }",
		"add element inet kindnet-ipmasq pod-subnets-v4 { 10.244.0.0/16 }",
		"add element inet kindnet-ipmasq pod-subnets-v6 { fd00:10:244::/56 }",
		"add rule inet kindnet-ipmasq postrouting ip saddr @pod-subnets-v4 ip daddr != @pod-subnets-v4 fib daddr type != local masquerade",
		"add rule inet kindnet-ipmasq postrouting ip6 saddr @pod-subnets-v6 ip6 daddr != @pod-subnets-v6 fib daddr type != local masquerade",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("missing %q in:\n%s", want, text)
		}
	}
	if strings.Contains(text, "10.244.3.0/24") {
		t.Errorf("a subnet inside another one must be merged (interval sets reject overlaps):\n%s", text)
	}

	v4only := knftables.NewFake(knftables.InetFamily, masqTableName).NewTransaction()
	WriteMasqTransaction(v4only, v4, nil)
	if strings.Contains(v4only.String(), "ip6") {
		t.Errorf("an IPv4 cluster gets no IPv6 rule:\n%s", v4only.String())
	}
}
