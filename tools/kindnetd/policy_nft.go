package main

// Rendering of a compiled Ruleset as one knftables transaction (pure: no I/O).
//
// The table it maintains, for a pod journey/kafka-0 isolated for ingress:
//
//	table inet kindnet-network-policies {
//	  counter ingress-denied, egress-denied
//	  map ingress-pods { type ipv4_addr : verdict; elements = { 10.244.0.5 : jump ingress_journey_kafka-0 } }
//	  map egress-pods  { type ipv4_addr : verdict }
//	  set peers_<hash> { type ipv4_addr; flags interval; ... }            allowed peer addresses of a rule
//	  set ports_<hash> { type inet_proto . inet_service; flags interval } allowed protocols and ports
//	  set peerports_<hash> { type ipv4_addr . inet_proto . inet_service } egress named ports, per peer
//	  chain forward { type filter hook forward priority filter; policy accept;
//	    ct state established,related accept
//	    ip saddr vmap @egress-pods     (egress chains "return" what they allow)
//	    ip daddr vmap @ingress-pods    (ingress chains "accept" what they allow)
//	  }
//	  chain ingress_journey_kafka-0 {
//	    ip saddr @peers_<hash> meta l4proto . th dport @ports_<hash> accept comment "journey/kafka ingress[0]"
//	    counter name ingress-denied drop
//	  }
//	}
//
// One rule per compiled policy rule and isolated pod; sets are named by a hash of their
// content, so pods selected by the same policy share them. Only the forward hook is used:
// traffic from or to the node itself (host-network pods, the kubelet's probes, port-forward,
// and a pod's traffic to its own node's addresses) never passes it and is never restricted.

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"sigs.k8s.io/knftables"
)

const (
	policyTableName      = "kindnet-network-policies"
	policyForwardChain   = "forward"
	ingressPodsMap       = "ingress-pods"
	egressPodsMap        = "egress-pods"
	ingressDeniedCounter = "ingress-denied"
	egressDeniedCounter  = "egress-denied"

	// maxNameLen keeps chain and set names well below the kernel's limit (256).
	maxNameLen = 128
	// maxCommentLen is below nft's limit for comments (128).
	maxCommentLen = 120
)

// setDef is a named nft set to create.
type setDef struct {
	name     string
	typ      string
	interval bool
	elements []string
}

// setRegistry names sets by content, so identical sets are created once.
type setRegistry struct {
	byName map[string]*setDef
	order  []string
}

func (r *setRegistry) add(prefix, typ string, interval bool, elements []string) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%t\n%s", typ, interval, strings.Join(elements, "\n"))
	sum := hex.EncodeToString(h.Sum(nil))
	for n := 12; ; n += 4 {
		name := prefix + "_" + sum[:min(n, len(sum))]
		existing, ok := r.byName[name]
		if !ok {
			r.byName[name] = &setDef{name: name, typ: typ, interval: interval, elements: elements}
			r.order = append(r.order, name)
			return name
		}
		if existing.typ == typ && existing.interval == interval && slices.Equal(existing.elements, elements) {
			return name
		}
		if n >= len(sum) {
			// A full SHA-256 collision; name it by position instead.
			name = fmt.Sprintf("%s_%d", prefix, len(r.order))
			r.byName[name] = &setDef{name: name, typ: typ, interval: interval, elements: elements}
			r.order = append(r.order, name)
			return name
		}
	}
}

// podChainName is the chain of a pod for a direction ("ingress" or "egress"). Namespace and
// pod names never contain "_", so the name is unambiguous; overly long ones are hashed.
func podChainName(dir, namespace, name string) string {
	n := dir + "_" + namespace + "_" + name
	if len(n) <= maxNameLen {
		return n
	}
	sum := sha256.Sum256([]byte(namespace + "/" + name))
	return dir + "_" + hex.EncodeToString(sum[:10])
}

func truncateComment(s string) string {
	if len(s) <= maxCommentLen {
		return s
	}
	return s[:maxCommentLen]
}

// WritePolicyTransaction adds to tx the operations that replace the whole content of the
// policy table with rs, atomically: every chain the table had (existing, as listed by
// knftables' ListAll; nil when the table does not exist) is flushed, every set, map and
// per-pod chain is deleted, and everything is added anew. The base chain and the named
// counters are kept, so the hook never goes away and the counts survive syncs.
func WritePolicyTransaction(tx *knftables.Transaction, rs *Ruleset, existing map[string][]string) {
	tx.Add(&knftables.Table{
		Comment: knftables.PtrTo("kindnetd (Journey): NetworkPolicy enforcement for the pods of this node"),
	})
	tx.Add(&knftables.Counter{Name: ingressDeniedCounter,
		Comment: knftables.PtrTo("packets of new connections to pods dropped by NetworkPolicy")})
	tx.Add(&knftables.Counter{Name: egressDeniedCounter,
		Comment: knftables.PtrTo("packets of new connections from pods dropped by NetworkPolicy")})

	// Empty every chain, then delete what the table holds: maps first (their verdicts
	// reference chains), then chains, then sets (no rule references them any more). The base
	// chain and the counters stay.
	for _, name := range sortedCopy(existing["chain"]) {
		tx.Flush(&knftables.Chain{Name: name})
	}
	for _, name := range sortedCopy(existing["map"]) {
		tx.Delete(&knftables.Map{Name: name})
	}
	for _, name := range sortedCopy(existing["chain"]) {
		if name != policyForwardChain {
			tx.Delete(&knftables.Chain{Name: name})
		}
	}
	for _, name := range sortedCopy(existing["set"]) {
		tx.Delete(&knftables.Set{Name: name})
	}
	for _, name := range sortedCopy(existing["counter"]) {
		if name != ingressDeniedCounter && name != egressDeniedCounter {
			tx.Delete(&knftables.Counter{Name: name})
		}
	}

	tx.Add(&knftables.Chain{
		Name:     policyForwardChain,
		Type:     knftables.PtrTo(knftables.FilterType),
		Hook:     knftables.PtrTo(knftables.ForwardHook),
		Priority: knftables.PtrTo(knftables.FilterPriority),
		Policy:   knftables.PtrTo(knftables.AcceptPolicy),
		Comment:  knftables.PtrTo("NetworkPolicy of the pods of this node (forwarded traffic only)"),
	})
	tx.Add(&knftables.Map{Name: ingressPodsMap, Type: "ipv4_addr : verdict",
		Comment: knftables.PtrTo("pods isolated for ingress: their chain")})
	tx.Add(&knftables.Map{Name: egressPodsMap, Type: "ipv4_addr : verdict",
		Comment: knftables.PtrTo("pods isolated for egress: their chain")})

	sets := &setRegistry{byName: map[string]*setDef{}}
	type chainDef struct {
		pod   PodRules
		name  string
		dir   string
		rules []*knftables.Rule
	}
	var chains []chainDef
	for _, dir := range []string{"ingress", "egress"} {
		// Ingress chains match the source and accept; egress chains match the destination
		// and return, so that the destination's ingress chain is still consulted.
		pods, peerField, verdict, counter := rs.Ingress, "ip saddr", "accept", ingressDeniedCounter
		if dir == "egress" {
			pods, peerField, verdict, counter = rs.Egress, "ip daddr", "return", egressDeniedCounter
		}
		for _, pod := range pods {
			ch := chainDef{pod: pod, name: podChainName(dir, pod.Namespace, pod.Name), dir: dir}
			for _, a := range pod.Allows {
				var match []string
				if len(a.PeerPorts) > 0 {
					set := sets.add("peerports", "ipv4_addr . inet_proto . inet_service", false, a.PeerPortStrings())
					match = append(match, peerField+" . meta l4proto . th dport @"+set)
				} else {
					if !a.AllPeers {
						set := sets.add("peers", "ipv4_addr", true, a.PeerStrings())
						match = append(match, peerField+" @"+set)
					}
					if !a.AllPorts {
						set := sets.add("ports", "inet_proto . inet_service", true, a.PortStrings())
						match = append(match, "meta l4proto . th dport @"+set)
					}
				}
				ch.rules = append(ch.rules, &knftables.Rule{
					Chain:   ch.name,
					Rule:    knftables.Concat(match, verdict),
					Comment: knftables.PtrTo(truncateComment(a.Origin)),
				})
			}
			ch.rules = append(ch.rules, &knftables.Rule{
				Chain: ch.name,
				Rule:  "counter name " + counter + " drop",
			})
			chains = append(chains, ch)
		}
	}

	for _, name := range sets.order {
		s := sets.byName[name]
		set := &knftables.Set{Name: s.name, Type: s.typ}
		if s.interval {
			set.Flags = []knftables.SetFlag{knftables.IntervalFlag}
		}
		tx.Add(set)
		for _, e := range s.elements {
			tx.Add(&knftables.Element{Set: s.name, Key: strings.Split(e, " . ")})
		}
	}
	for _, ch := range chains {
		tx.Add(&knftables.Chain{Name: ch.name, Comment: knftables.PtrTo(truncateComment(
			fmt.Sprintf("%s of pod %s (%s)", ch.dir, ch.pod.Key(), ch.pod.IP)))})
		for _, r := range ch.rules {
			tx.Add(r)
		}
		m := ingressPodsMap
		if ch.dir == "egress" {
			m = egressPodsMap
		}
		tx.Add(&knftables.Element{Map: m, Key: []string{ch.pod.IP.String()},
			Value: []string{"jump " + ch.name}, Comment: knftables.PtrTo(truncateComment(ch.pod.Key()))})
	}

	tx.Add(&knftables.Rule{Chain: policyForwardChain, Rule: "ct state established,related accept",
		Comment: knftables.PtrTo("replies and related traffic always pass")})
	tx.Add(&knftables.Rule{Chain: policyForwardChain, Rule: "ip saddr vmap @" + egressPodsMap})
	tx.Add(&knftables.Rule{Chain: policyForwardChain, Rule: "ip daddr vmap @" + ingressPodsMap})
}

// WritePolicyTableDeletion adds to tx the operations that remove the policy table, whether or
// not it exists (add then delete: nft's "destroy" needs nft >= 1.0.8).
func WritePolicyTableDeletion(tx *knftables.Transaction) {
	tx.Add(&knftables.Table{})
	tx.Delete(&knftables.Table{})
}

func sortedCopy(in []string) []string {
	out := slices.Clone(in)
	slices.Sort(out)
	return out
}
