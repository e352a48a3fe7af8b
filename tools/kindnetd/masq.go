package main

// Masquerade of pod traffic leaving the cluster's pod network, as kind's ip-masq agent does
// (upstream: the iptables nat chain KIND-MASQ-AGENT), here as an nftables table.

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"sigs.k8s.io/knftables"
)

const (
	masqTableName = "kindnet-ipmasq"
	masqChain     = "postrouting"
	masqSetV4     = "pod-subnets-v4"
	masqSetV6     = "pod-subnets-v6"
)

// parsePodSubnets parses POD_SUBNET: comma-separated CIDRs, IPv4 and/or IPv6.
func parsePodSubnets(s string) (v4, v6 []netip.Prefix, err error) {
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, nil, fmt.Errorf("POD_SUBNET %q: %w", s, err)
		}
		p = p.Masked()
		if p.Addr().Is4() {
			v4 = append(v4, p)
		} else {
			v6 = append(v6, p)
		}
	}
	if len(v4) == 0 && len(v6) == 0 {
		return nil, nil, fmt.Errorf("POD_SUBNET %q holds no CIDR", s)
	}
	return v4, v6, nil
}

// WriteMasqTransaction adds to tx the operations that (re)build the masquerade table: traffic
// from the pod subnets to a destination outside them that is not an address of this node is
// masqueraded to the node's address.
func WriteMasqTransaction(tx *knftables.Transaction, v4, v6 []netip.Prefix) {
	tx.Add(&knftables.Table{
		Comment: knftables.PtrTo("kindnetd (Journey): masquerade of pod traffic leaving the pod network"),
	})
	tx.Flush(&knftables.Table{})
	tx.Add(&knftables.Chain{
		Name:     masqChain,
		Type:     knftables.PtrTo(knftables.NATType),
		Hook:     knftables.PtrTo(knftables.PostroutingHook),
		Priority: knftables.PtrTo(knftables.SNATPriority),
	})
	families := []struct {
		set, typ, field string
		subnets         []string
	}{
		{masqSetV4, "ipv4_addr", "ip", masqElementsV4(v4)},
		{masqSetV6, "ipv6_addr", "ip6", masqElementsV6(v6)},
	}
	for _, f := range families {
		if len(f.subnets) == 0 {
			continue
		}
		tx.Add(&knftables.Set{Name: f.set, Type: f.typ, Flags: []knftables.SetFlag{knftables.IntervalFlag},
			Comment: knftables.PtrTo("the cluster's pod subnets (POD_SUBNET)")})
		tx.Flush(&knftables.Set{Name: f.set})
		for _, e := range f.subnets {
			tx.Add(&knftables.Element{Set: f.set, Key: []string{e}})
		}
		tx.Add(&knftables.Rule{
			Chain: masqChain,
			Rule: knftables.Concat(f.field, "saddr", "@"+f.set, f.field, "daddr", "!=", "@"+f.set,
				"fib daddr type != local masquerade"),
			Comment: knftables.PtrTo("pod traffic leaving the pod network is masqueraded"),
		})
	}
}

func masqElementsV4(ps []netip.Prefix) []string {
	ranges := make([]AddrRange, 0, len(ps))
	for _, p := range ps {
		ranges = append(ranges, prefixRange(p))
	}
	var out []string
	for _, r := range normalizeRanges(ranges) {
		out = append(out, r.String())
	}
	return out
}

// masqElementsV6 drops IPv6 prefixes contained in another (interval sets reject overlaps).
func masqElementsV6(ps []netip.Prefix) []string {
	sorted := slices.Clone(ps)
	slices.SortFunc(sorted, func(a, b netip.Prefix) int { return a.Bits() - b.Bits() })
	var kept []netip.Prefix
	for _, p := range sorted {
		covered := false
		for _, k := range kept {
			if k.Contains(p.Addr()) {
				covered = true
				break
			}
		}
		if !covered {
			kept = append(kept, p)
		}
	}
	out := make([]string, 0, len(kept))
	for _, p := range kept {
		out = append(out, p.String())
	}
	slices.Sort(out)
	return out
}
