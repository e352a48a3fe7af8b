package main

// The NetworkPolicy compiler: a pure function from a snapshot of pods, namespaces and
// NetworkPolicies (networking.k8s.io/v1) to a Ruleset, the per-pod allow lists this node
// enforces. No I/O here; nftables.go renders a Ruleset as one knftables transaction and nft.go
// applies it.

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// PolicyInput is the snapshot the compiler works on.
type PolicyInput struct {
	// NodeName is this node: only pods scheduled here are enforced (isolated) by it.
	NodeName   string
	Pods       []*corev1.Pod
	Namespaces []*corev1.Namespace
	Policies   []*networkingv1.NetworkPolicy
}

// Ruleset is the compiled result: for each local pod isolated in a direction, what is allowed.
type Ruleset struct {
	// Policies is the number of NetworkPolicies in the snapshot (cluster-wide).
	Policies int
	// Ingress lists the local pods isolated for ingress, sorted by namespace/name.
	Ingress []PodRules
	// Egress lists the local pods isolated for egress, sorted by namespace/name.
	Egress []PodRules
	// IPv6Skipped names (namespace/name) the isolated local pods that have IPv6 addresses:
	// only IPv4 traffic is enforced.
	IPv6Skipped []string
	// Warnings describe content the compiler could not use (the API server validates
	// policies, so none are expected): a peer or port that cannot be understood allows
	// nothing, a policy whose podSelector cannot be understood selects nothing, and a second
	// local pod with the address of an isolated one is not enforced.
	Warnings []string
}

// IsolatedPods is the number of distinct local pods isolated in either direction.
func (rs *Ruleset) IsolatedPods() int {
	seen := map[string]bool{}
	for _, p := range rs.Ingress {
		seen[p.Key()] = true
	}
	for _, p := range rs.Egress {
		seen[p.Key()] = true
	}
	return len(seen)
}

// PodRules is one isolated pod in one direction: traffic to it (ingress) or from it (egress)
// is allowed when any of Allows matches, or when it belongs to an established connection.
type PodRules struct {
	Namespace string
	Name      string
	// IP is the pod's IPv4 address.
	IP     netip.Addr
	Allows []Allow
}

// Key is "namespace/name".
func (p PodRules) Key() string { return p.Namespace + "/" + p.Name }

// Allow is one compiled NetworkPolicy rule for one pod: a single nftables rule.
//
// Either PeerPorts is set (egress rules with named ports: exact peer address, protocol and
// port triples), or the rule allows any peer in Peers (every address when AllPeers) on any
// protocol and port in Ports (everything, ICMP included, when AllPorts).
type Allow struct {
	// Origin names the policy rule, e.g. "journey/kafka ingress[0]".
	Origin    string
	AllPeers  bool
	Peers     []AddrRange
	AllPorts  bool
	Ports     []PortRange
	PeerPorts []PeerPort
}

// PeerStrings renders Peers as nft set elements (for tests and logs).
func (a Allow) PeerStrings() []string {
	out := make([]string, 0, len(a.Peers))
	for _, r := range a.Peers {
		out = append(out, r.String())
	}
	return out
}

// PortStrings renders Ports as nft set elements (for tests and logs).
func (a Allow) PortStrings() []string {
	out := make([]string, 0, len(a.Ports))
	for _, p := range a.Ports {
		out = append(out, p.String())
	}
	return out
}

// PeerPortStrings renders PeerPorts as nft set elements (for tests and logs).
func (a Allow) PeerPortStrings() []string {
	out := make([]string, 0, len(a.PeerPorts))
	for _, p := range a.PeerPorts {
		out = append(out, p.String())
	}
	return out
}

// PeerPort is one peer address with one protocol and port.
type PeerPort struct {
	Addr  netip.Addr
	Proto string
	Port  uint16
}

func (p PeerPort) String() string { return fmt.Sprintf("%s . %s . %d", p.Addr, p.Proto, p.Port) }

func comparePeerPort(a, b PeerPort) int {
	if c := a.Addr.Compare(b.Addr); c != 0 {
		return c
	}
	if c := strings.Compare(a.Proto, b.Proto); c != 0 {
		return c
	}
	return int(a.Port) - int(b.Port)
}

// AddrRange is an inclusive range of IPv4 addresses.
type AddrRange struct{ First, Last uint32 }

func addrFromUint32(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func uint32FromAddr(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// prefixRange is the address range of an IPv4 prefix.
func prefixRange(p netip.Prefix) AddrRange {
	p = p.Masked()
	first := uint32FromAddr(p.Addr())
	hostBits := 32 - p.Bits()
	var last uint32
	if hostBits == 32 {
		last = ^uint32(0)
	} else {
		last = first | (uint32(1)<<hostBits - 1)
	}
	return AddrRange{First: first, Last: last}
}

// String renders the range as an nft interval set element: an address, a prefix when the range
// is one, or "first-last".
func (r AddrRange) String() string {
	if r.First == r.Last {
		return addrFromUint32(r.First).String()
	}
	size := uint64(r.Last) - uint64(r.First) + 1
	if size&(size-1) == 0 && uint64(r.First)%size == 0 {
		bits := 32
		for s := size; s > 1; s >>= 1 {
			bits--
		}
		return netip.PrefixFrom(addrFromUint32(r.First), bits).String()
	}
	return addrFromUint32(r.First).String() + "-" + addrFromUint32(r.Last).String()
}

// contains reports whether the sorted, merged ranges contain v.
func rangesContain(ranges []AddrRange, v uint32) bool {
	i := sort.Search(len(ranges), func(i int) bool { return ranges[i].Last >= v })
	return i < len(ranges) && ranges[i].First <= v
}

// normalizeRanges sorts ranges and merges overlapping and adjacent ones (nft interval sets
// reject overlapping elements).
func normalizeRanges(in []AddrRange) []AddrRange {
	if len(in) == 0 {
		return nil
	}
	rs := slices.Clone(in)
	slices.SortFunc(rs, func(a, b AddrRange) int {
		if a.First != b.First {
			if a.First < b.First {
				return -1
			}
			return 1
		}
		if a.Last < b.Last {
			return -1
		} else if a.Last > b.Last {
			return 1
		}
		return 0
	})
	out := []AddrRange{rs[0]}
	for _, r := range rs[1:] {
		last := &out[len(out)-1]
		if last.Last == ^uint32(0) || r.First <= last.Last+1 {
			if r.Last > last.Last {
				last.Last = r.Last
			}
			continue
		}
		out = append(out, r)
	}
	return out
}

// subtractRange removes ex from every range in rs.
func subtractRange(rs []AddrRange, ex AddrRange) []AddrRange {
	var out []AddrRange
	for _, r := range rs {
		if ex.Last < r.First || ex.First > r.Last {
			out = append(out, r)
			continue
		}
		if ex.First > r.First {
			out = append(out, AddrRange{First: r.First, Last: ex.First - 1})
		}
		if ex.Last < r.Last {
			out = append(out, AddrRange{First: ex.Last + 1, Last: r.Last})
		}
	}
	return out
}

// PortRange is an inclusive port range of one protocol ("tcp", "udp" or "sctp").
type PortRange struct {
	Proto       string
	First, Last uint16
}

// String renders the range as an element of an "inet_proto . inet_service" interval set.
func (p PortRange) String() string {
	if p.First == p.Last {
		return fmt.Sprintf("%s . %d", p.Proto, p.First)
	}
	return fmt.Sprintf("%s . %d-%d", p.Proto, p.First, p.Last)
}

func normalizePorts(in []PortRange) []PortRange {
	if len(in) == 0 {
		return nil
	}
	ps := slices.Clone(in)
	slices.SortFunc(ps, func(a, b PortRange) int {
		if c := strings.Compare(a.Proto, b.Proto); c != 0 {
			return c
		}
		if a.First != b.First {
			return int(a.First) - int(b.First)
		}
		return int(a.Last) - int(b.Last)
	})
	out := []PortRange{ps[0]}
	for _, p := range ps[1:] {
		last := &out[len(out)-1]
		if p.Proto == last.Proto && (last.Last == 65535 || p.First <= last.Last+1) {
			if p.Last > last.Last {
				last.Last = p.Last
			}
			continue
		}
		out = append(out, p)
	}
	return out
}

// nftProto maps a NetworkPolicyPort protocol (nil means TCP) to its nft name.
func nftProto(p *corev1.Protocol) (string, bool) {
	if p == nil {
		return "tcp", true
	}
	switch *p {
	case corev1.ProtocolTCP:
		return "tcp", true
	case corev1.ProtocolUDP:
		return "udp", true
	case corev1.ProtocolSCTP:
		return "sctp", true
	}
	return "", false
}

// podIPv4 returns the pod's IPv4 address, if any, and whether it has an IPv6 one.
func podIPv4(pod *corev1.Pod) (v4 netip.Addr, hasV6 bool) {
	ips := make([]string, 0, len(pod.Status.PodIPs)+1)
	for _, ip := range pod.Status.PodIPs {
		ips = append(ips, ip.IP)
	}
	if len(ips) == 0 && pod.Status.PodIP != "" {
		ips = append(ips, pod.Status.PodIP)
	}
	for _, s := range ips {
		a, err := netip.ParseAddr(s)
		if err != nil {
			continue // the API server validates pod IPs; an unparsable one cannot be matched
		}
		a = a.Unmap()
		if a.Is4() {
			if !v4.IsValid() {
				v4 = a
			}
		} else {
			hasV6 = true
		}
	}
	return v4, hasV6
}

// podTakesPart is true for pods that take part in NetworkPolicy, as isolated pods or as peers:
// not host-network (their address is the node's), not finished (their address may be reused).
func podTakesPart(pod *corev1.Pod) bool {
	if pod.Spec.HostNetwork {
		return false
	}
	return pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed
}

// namedPort resolves a container port name of a pod for a protocol.
func namedPort(pod *corev1.Pod, name, proto string) (uint16, bool) {
	find := func(cs []corev1.Container) (uint16, bool) {
		for _, c := range cs {
			for _, cp := range c.Ports {
				if cp.Name != name || cp.ContainerPort < 1 || cp.ContainerPort > 65535 {
					continue
				}
				cpProto := "tcp" // the API's default
				if cp.Protocol != "" {
					p, ok := nftProto(&cp.Protocol)
					if !ok {
						continue
					}
					cpProto = p
				}
				if cpProto == proto {
					return uint16(cp.ContainerPort), true
				}
			}
		}
		return 0, false
	}
	if port, ok := find(pod.Spec.Containers); ok {
		return port, true
	}
	return find(pod.Spec.InitContainers)
}

// peerPod is a pod usable as a peer, with its IPv4 address.
type peerPod struct {
	pod *corev1.Pod
	ip  netip.Addr
}

// compiledRule is one ingress or egress rule of a policy, independent of the isolated pod.
type compiledRule struct {
	origin   string
	allPeers bool
	peers    []AddrRange // normalized
	allPorts bool
	ports    []PortRange // numeric ports, normalized
	named    []namedPortRef
	// peerPorts: egress named ports resolved against each peer pod (egress only).
	peerPorts []PeerPort
}

type namedPortRef struct{ name, proto string }

type compiler struct {
	nsLabels  map[string]labels.Set
	peers     []peerPod            // every pod usable as a peer, sorted by IP
	peersByNS map[string][]peerPod // the same, by namespace
	warnings  []string
}

func (c *compiler) warnf(format string, args ...any) {
	c.warnings = append(c.warnings, fmt.Sprintf(format, args...))
}

// namespaceLabels returns a namespace's labels; a namespace not (yet) in the snapshot still
// has the label the API server sets on every namespace.
func (c *compiler) namespaceLabels(ns string) labels.Set {
	if l, ok := c.nsLabels[ns]; ok {
		return l
	}
	return labels.Set{corev1.LabelMetadataName: ns}
}

// Compile turns a snapshot into the Ruleset this node enforces.
func Compile(in PolicyInput) *Ruleset {
	c := &compiler{nsLabels: map[string]labels.Set{}, peersByNS: map[string][]peerPod{}}
	for _, ns := range in.Namespaces {
		l := labels.Set{}
		for k, v := range ns.Labels {
			l[k] = v
		}
		if _, ok := l[corev1.LabelMetadataName]; !ok {
			l[corev1.LabelMetadataName] = ns.Name
		}
		c.nsLabels[ns.Name] = l
	}

	pods := slices.Clone(in.Pods)
	slices.SortFunc(pods, func(a, b *corev1.Pod) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	for _, pod := range pods {
		if !podTakesPart(pod) {
			continue
		}
		if ip, _ := podIPv4(pod); ip.IsValid() {
			pp := peerPod{pod: pod, ip: ip}
			c.peers = append(c.peers, pp)
			c.peersByNS[pod.Namespace] = append(c.peersByNS[pod.Namespace], pp)
		}
	}
	slices.SortStableFunc(c.peers, func(a, b peerPod) int { return a.ip.Compare(b.ip) })

	policies := slices.Clone(in.Policies)
	slices.SortFunc(policies, func(a, b *networkingv1.NetworkPolicy) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	byNS := map[string][]*networkingv1.NetworkPolicy{}
	selectors := map[*networkingv1.NetworkPolicy]labels.Selector{}
	for _, p := range policies {
		sel, err := metav1.LabelSelectorAsSelector(&p.Spec.PodSelector)
		if err != nil {
			c.warnf("policy %s/%s: invalid podSelector, policy ignored: %v", p.Namespace, p.Name, err)
			continue
		}
		selectors[p] = sel
		byNS[p.Namespace] = append(byNS[p.Namespace], p)
	}

	rs := &Ruleset{Policies: len(in.Policies)}
	cache := map[string]*compiledRule{}
	rule := func(p *networkingv1.NetworkPolicy, dir string, i int) *compiledRule {
		key := fmt.Sprintf("%s/%s %s[%d]", p.Namespace, p.Name, dir, i)
		if r, ok := cache[key]; ok {
			return r
		}
		var r *compiledRule
		if dir == "ingress" {
			r = c.compileRule(key, p.Namespace, p.Spec.Ingress[i].From, p.Spec.Ingress[i].Ports, false)
		} else {
			r = c.compileRule(key, p.Namespace, p.Spec.Egress[i].To, p.Spec.Egress[i].Ports, true)
		}
		cache[key] = r
		return r
	}

	enforcedIPs := map[netip.Addr]string{} // an address is one key of the verdict maps
	for _, pod := range pods {
		if pod.Spec.NodeName != in.NodeName || !podTakesPart(pod) {
			continue
		}
		ip, hasV6 := podIPv4(pod)
		if !ip.IsValid() && !hasV6 {
			continue // no address yet: no traffic to enforce
		}
		podLabels := labels.Set(pod.Labels)
		var ingress, egress *PodRules
		for _, p := range byNS[pod.Namespace] {
			if !selectors[p].Matches(podLabels) {
				continue
			}
			wantIngress, wantEgress := policyTypes(p)
			if wantIngress {
				if ingress == nil {
					ingress = &PodRules{Namespace: pod.Namespace, Name: pod.Name, IP: ip}
				}
				for i := range p.Spec.Ingress {
					if a, ok := ingressAllow(rule(p, "ingress", i), pod); ok {
						ingress.Allows = append(ingress.Allows, a)
					}
				}
			}
			if wantEgress {
				if egress == nil {
					egress = &PodRules{Namespace: pod.Namespace, Name: pod.Name, IP: ip}
				}
				for i := range p.Spec.Egress {
					egress.Allows = append(egress.Allows, egressAllows(rule(p, "egress", i))...)
				}
			}
		}
		if (ingress != nil || egress != nil) && hasV6 {
			rs.IPv6Skipped = append(rs.IPv6Skipped, pod.Namespace+"/"+pod.Name)
		}
		if !ip.IsValid() {
			continue
		}
		if other, dup := enforcedIPs[ip]; dup && (ingress != nil || egress != nil) {
			c.warnf("pod %s/%s has the address %s of pod %s: not enforced", pod.Namespace, pod.Name, ip, other)
			continue
		}
		if ingress != nil {
			rs.Ingress = append(rs.Ingress, *ingress)
		}
		if egress != nil {
			rs.Egress = append(rs.Egress, *egress)
		}
		if ingress != nil || egress != nil {
			enforcedIPs[ip] = pod.Namespace + "/" + pod.Name
		}
	}
	rs.Warnings = c.warnings
	return rs
}

// policyTypes applies the API's defaulting: Ingress always, Egress when the policy has egress
// rules, unless policyTypes is given.
func policyTypes(p *networkingv1.NetworkPolicy) (ingress, egress bool) {
	if len(p.Spec.PolicyTypes) == 0 {
		return true, len(p.Spec.Egress) > 0
	}
	for _, t := range p.Spec.PolicyTypes {
		switch t {
		case networkingv1.PolicyTypeIngress:
			ingress = true
		case networkingv1.PolicyTypeEgress:
			egress = true
		}
	}
	return ingress, egress
}

// ingressAllow specializes an ingress rule for the isolated pod: named ports are that pod's.
func ingressAllow(r *compiledRule, pod *corev1.Pod) (Allow, bool) {
	a := Allow{Origin: r.origin, AllPeers: r.allPeers, Peers: r.peers, AllPorts: r.allPorts}
	if !r.allPeers && len(r.peers) == 0 {
		return Allow{}, false // peers that match nothing allow nothing
	}
	if !r.allPorts {
		ports := slices.Clone(r.ports)
		for _, n := range r.named {
			if port, ok := namedPort(pod, n.name, n.proto); ok {
				ports = append(ports, PortRange{Proto: n.proto, First: port, Last: port})
			}
		}
		a.Ports = normalizePorts(ports)
		if len(a.Ports) == 0 {
			return Allow{}, false // only named ports this pod does not have
		}
	}
	return a, true
}

// egressAllows turns an egress rule into at most two nft rules: peers × numeric ports, and the
// (peer, named port) pairs.
func egressAllows(r *compiledRule) []Allow {
	var out []Allow
	if r.allPeers || len(r.peers) > 0 {
		if r.allPorts || len(r.ports) > 0 {
			out = append(out, Allow{Origin: r.origin, AllPeers: r.allPeers, Peers: r.peers,
				AllPorts: r.allPorts, Ports: r.ports})
		}
	}
	if len(r.peerPorts) > 0 {
		out = append(out, Allow{Origin: r.origin, PeerPorts: r.peerPorts})
	}
	return out
}

// compileRule compiles the peers and ports of one rule of a policy in namespace ns.
func (c *compiler) compileRule(origin, ns string, peers []networkingv1.NetworkPolicyPeer,
	ports []networkingv1.NetworkPolicyPort, egress bool) *compiledRule {
	r := &compiledRule{origin: origin}

	if len(peers) == 0 {
		r.allPeers = true
	} else {
		var ranges []AddrRange
		for j, peer := range peers {
			ranges = append(ranges, c.peerRanges(fmt.Sprintf("%s peer %d", origin, j), ns, peer)...)
		}
		r.peers = normalizeRanges(ranges)
	}

	if len(ports) == 0 {
		r.allPorts = true
	} else {
		var numeric []PortRange
		for j, p := range ports {
			proto, ok := nftProto(p.Protocol)
			if !ok {
				c.warnf("%s port %d: protocol %q is not supported, skipped", origin, j, *p.Protocol)
				continue
			}
			switch {
			case p.Port == nil:
				numeric = append(numeric, PortRange{Proto: proto, First: 0, Last: 65535})
			case p.Port.Type == intstr.String:
				r.named = append(r.named, namedPortRef{name: p.Port.StrVal, proto: proto})
			default:
				first := p.Port.IntVal
				last := first
				if p.EndPort != nil {
					last = *p.EndPort
				}
				if first < 1 || first > 65535 || last < first || last > 65535 {
					c.warnf("%s port %d: invalid port range %d-%d, skipped", origin, j, first, last)
					continue
				}
				numeric = append(numeric, PortRange{Proto: proto, First: uint16(first), Last: uint16(last)})
			}
		}
		r.ports = normalizePorts(numeric)
	}

	if egress && len(r.named) > 0 {
		// A named port in an egress rule means, for each peer pod, the port that pod names so.
		for _, pp := range c.peers {
			if !r.allPeers && !rangesContain(r.peers, uint32FromAddr(pp.ip)) {
				continue
			}
			for _, n := range r.named {
				if port, ok := namedPort(pp.pod, n.name, n.proto); ok {
					r.peerPorts = append(r.peerPorts, PeerPort{Addr: pp.ip, Proto: n.proto, Port: port})
				}
			}
		}
		slices.SortFunc(r.peerPorts, comparePeerPort)
		r.peerPorts = slices.Compact(r.peerPorts)
	}
	return r
}

// peerRanges resolves one peer of a rule of a policy in namespace ns to IPv4 address ranges.
func (c *compiler) peerRanges(what, ns string, peer networkingv1.NetworkPolicyPeer) []AddrRange {
	if peer.IPBlock != nil {
		if peer.PodSelector != nil || peer.NamespaceSelector != nil {
			c.warnf("%s: ipBlock combined with a selector is invalid, skipped", what)
			return nil
		}
		return c.ipBlockRanges(what, peer.IPBlock)
	}
	if peer.PodSelector == nil && peer.NamespaceSelector == nil {
		c.warnf("%s: empty peer, skipped", what)
		return nil
	}

	podSel := labels.Everything()
	if peer.PodSelector != nil {
		s, err := metav1.LabelSelectorAsSelector(peer.PodSelector)
		if err != nil {
			c.warnf("%s: invalid podSelector, skipped: %v", what, err)
			return nil
		}
		podSel = s
	}
	var candidates []peerPod
	if peer.NamespaceSelector == nil {
		candidates = c.peersByNS[ns]
	} else {
		nsSel, err := metav1.LabelSelectorAsSelector(peer.NamespaceSelector)
		if err != nil {
			c.warnf("%s: invalid namespaceSelector, skipped: %v", what, err)
			return nil
		}
		for _, pp := range c.peers {
			if nsSel.Matches(c.namespaceLabels(pp.pod.Namespace)) {
				candidates = append(candidates, pp)
			}
		}
	}
	var out []AddrRange
	for _, pp := range candidates {
		if podSel.Matches(labels.Set(pp.pod.Labels)) {
			v := uint32FromAddr(pp.ip)
			out = append(out, AddrRange{First: v, Last: v})
		}
	}
	return out
}

// ipBlockRanges is the ipBlock's CIDR minus its excepts (IPv4; IPv6 blocks match no IPv4
// traffic and yield nothing).
func (c *compiler) ipBlockRanges(what string, b *networkingv1.IPBlock) []AddrRange {
	p, err := netip.ParsePrefix(b.CIDR)
	if err != nil {
		c.warnf("%s: invalid ipBlock cidr %q, skipped: %v", what, b.CIDR, err)
		return nil
	}
	if !p.Addr().Is4() {
		return nil
	}
	ranges := []AddrRange{prefixRange(p)}
	for _, e := range b.Except {
		ep, err := netip.ParsePrefix(e)
		if err != nil {
			c.warnf("%s: invalid ipBlock except %q, skipped: %v", what, e, err)
			continue
		}
		if !ep.Addr().Is4() {
			continue
		}
		ranges = subtractRange(ranges, prefixRange(ep))
	}
	return ranges
}
