package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// describe renders an Allow compactly: "<peers> on <ports>", or "pairs <peer . proto . port>...".
func describe(a Allow) string {
	if len(a.PeerPorts) > 0 {
		return "pairs " + strings.Join(a.PeerPortStrings(), ", ")
	}
	peers, ports := "any peer", "any port"
	if !a.AllPeers {
		peers = strings.Join(a.PeerStrings(), ", ")
	}
	if !a.AllPorts {
		ports = strings.Join(a.PortStrings(), ", ")
	}
	return peers + " on " + ports
}

// compiled is a direction of a Ruleset as "namespace/pod" -> described allows.
func compiled(list []PodRules) map[string][]string {
	out := map[string][]string{}
	for _, p := range list {
		out[p.Key()] = []string{}
		for _, a := range p.Allows {
			out[p.Key()] = append(out[p.Key()], describe(a))
		}
	}
	return out
}

type compilerCase struct {
	name        string
	in          PolicyInput
	wantIngress map[string][]string
	wantEgress  map[string][]string
}

func runCompilerCases(t *testing.T, cases []compilerCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.in.NodeName == "" {
				tc.in.NodeName = thisNode
			}
			rs := Compile(tc.in)
			for _, w := range rs.Warnings {
				t.Logf("warning: %s", w)
			}
			want := func(m map[string][]string) map[string][]string {
				if m == nil {
					return map[string][]string{}
				}
				return m
			}
			if got := compiled(rs.Ingress); !equalAllows(got, want(tc.wantIngress)) {
				t.Errorf("ingress:\n got %s\nwant %s", show(got), show(want(tc.wantIngress)))
			}
			if got := compiled(rs.Egress); !equalAllows(got, want(tc.wantEgress)) {
				t.Errorf("egress:\n got %s\nwant %s", show(got), show(want(tc.wantEgress)))
			}
			// Whatever the input, the rendering references only what it defines.
			fake := knftablesFake()
			tx := fake.NewTransaction()
			WritePolicyTransaction(tx, rs, nil)
			if err := fake.Run(t.Context(), tx); err != nil {
				t.Fatalf("the transaction is inconsistent: %v\n%s", err, tx.String())
			}
		})
	}
}

func equalAllows(a, b map[string][]string) bool {
	return maps.EqualFunc(a, b, func(x, y []string) bool { return slices.Equal(x, y) })
}

func show(m map[string][]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(m)) {
		fmt.Fprintf(&b, "\n  %s: %q", k, m[k])
	}
	return b.String()
}

func TestAPodSelectedByAnIngressPolicyAcceptsOnlyTheListedPeersAndPorts(t *testing.T) {
	in := journeyExample()
	in.Pods = append(in.Pods, mkPod("journey", "journey-api-0", "10.244.1.7", journeyLabels("api"), onNode("kind-worker2")))
	runCompilerCases(t, []compilerCase{{
		name: "kafka admits Journey's pods on 9092 and 9093; the foreign pod is neither isolated nor a peer",
		in:   in,
		wantIngress: map[string][]string{
			"journey/kafka-0": {"10.244.0.5, 10.244.1.7 on tcp . 9092-9093"},
		},
	}})

	rs := Compile(in)
	kafka := podRules(t, rs.Ingress, "journey/kafka-0")
	if kafka.IP != addr("10.244.0.5") {
		t.Errorf("kafka-0 is enforced at %s, want 10.244.0.5", kafka.IP)
	}
	text := renderPolicy(t, rs, nil)
	for _, want := range []string{
		"add element inet kindnet-network-policies ingress-pods { 10.244.0.5 comment \"journey/kafka-0\" : jump ingress_journey_kafka-0 }",
		"add rule inet kindnet-network-policies forward ct state established,related accept",
		"add rule inet kindnet-network-policies forward ip daddr vmap @ingress-pods",
		"add rule inet kindnet-network-policies ingress_journey_kafka-0 counter name ingress-denied drop",
		"{ 10.244.0.5 }",
		"{ 10.244.1.7 }",
		"{ tcp . 9092-9093 }",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the transaction lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "10.244.0.9") {
		t.Errorf("the foreign pod's address appears in the ruleset:\n%s", text)
	}
	if strings.Contains(text, " queue") {
		t.Errorf("the ruleset uses the queue expression:\n%s", text)
	}
	allow := fmt.Sprintf("ip saddr @%s meta l4proto . th dport @%s accept comment \"journey/kafka ingress[0]\"",
		setName("peers", "ipv4_addr", true, "10.244.0.5", "10.244.1.7"),
		setName("ports", "inet_proto . inet_service", true, "tcp . 9092-9093"))
	if !strings.Contains(text, allow) {
		t.Errorf("the transaction lacks the allow rule %q:\n%s", allow, text)
	}
}

// setName is the name the renderer gives a set of this content.
func setName(prefix, typ string, interval bool, elements ...string) string {
	r := &setRegistry{byName: map[string]*setDef{}}
	return r.add(prefix, typ, interval, elements)
}

func TestNamedIngressPortsResolveAgainstTheIsolatedPodsOwnContainerPorts(t *testing.T) {
	web := map[string]string{"app": "web"}
	runCompilerCases(t, []compilerCase{{
		name: "each selected pod opens the port it names http; a pod without it allows nothing",
		in: PolicyInput{
			Pods: []*corev1.Pod{
				mkPod("default", "web-a", "10.244.0.10", web, containerPort("http", 8080, corev1.ProtocolTCP)),
				mkPod("default", "web-b", "10.244.0.11", web, containerPort("http", 9090, "")),
				mkPod("default", "web-c", "10.244.0.12", web, containerPort("http", 8080, corev1.ProtocolUDP)),
				mkPod("default", "web-d", "10.244.0.13", web),
			},
			Policies: []*networkingv1.NetworkPolicy{
				mkPolicy("default", "web", selOf(web), ingressRule(nil, named("http", ""))),
			},
		},
		wantIngress: map[string][]string{
			"default/web-a": {"any peer on tcp . 8080"},
			"default/web-b": {"any peer on tcp . 9090"},
			"default/web-c": {},
			"default/web-d": {},
		},
	}, {
		name: "named and numeric ports of one rule combine",
		in: PolicyInput{
			Pods: []*corev1.Pod{
				mkPod("default", "web-a", "10.244.0.10", web, containerPort("metrics", 9100, corev1.ProtocolTCP)),
			},
			Policies: []*networkingv1.NetworkPolicy{
				mkPolicy("default", "web", selOf(web), ingressRule(nil, tcp(80), named("metrics", corev1.ProtocolTCP))),
			},
		},
		wantIngress: map[string][]string{"default/web-a": {"any peer on tcp . 80, tcp . 9100"}},
	}})
}

func TestANamedPortInAnEgressRuleMatchesEachPeerOnlyOnThePortItNames(t *testing.T) {
	client := map[string]string{"app": "client"}
	db := map[string]string{"app": "db"}
	runCompilerCases(t, []compilerCase{{
		name: "the client reaches each db pod on that pod's pg port only",
		in: PolicyInput{
			Pods: []*corev1.Pod{
				mkPod("default", "client", "10.244.0.20", client),
				mkPod("default", "db-0", "10.244.0.21", db, containerPort("pg", 5432, corev1.ProtocolTCP)),
				mkPod("default", "db-1", "10.244.1.22", db, onNode("kind-worker2"), containerPort("pg", 6432, corev1.ProtocolTCP)),
				mkPod("default", "db-udp", "10.244.0.23", db, containerPort("pg", 5432, corev1.ProtocolUDP)),
				mkPod("default", "cache", "10.244.0.24", map[string]string{"app": "cache"}, containerPort("pg", 7777, corev1.ProtocolTCP)),
			},
			Policies: []*networkingv1.NetworkPolicy{
				mkPolicy("default", "client", selOf(client), types(networkingv1.PolicyTypeEgress),
					egressRule(peers(podPeer(selOf(db))), named("pg", corev1.ProtocolTCP), tcp(53))),
			},
		},
		wantEgress: map[string][]string{
			"default/client": {
				"10.244.0.21, 10.244.0.23, 10.244.1.22 on tcp . 53",
				"pairs 10.244.0.21 . tcp . 5432, 10.244.1.22 . tcp . 6432",
			},
		},
	}, {
		name: "an egress rule without peers resolves the named port on every pod",
		in: PolicyInput{
			Pods: []*corev1.Pod{
				mkPod("default", "client", "10.244.0.20", client),
				mkPod("other", "db-0", "10.244.0.21", db, containerPort("pg", 5432, corev1.ProtocolTCP)),
				mkPod("other", "db-host", "172.18.0.3", db, hostNetwork(), containerPort("pg", 5432, corev1.ProtocolTCP)),
			},
			Policies: []*networkingv1.NetworkPolicy{
				mkPolicy("default", "client", selOf(client), types(networkingv1.PolicyTypeEgress),
					egressRule(nil, named("pg", ""))),
			},
		},
		wantEgress: map[string][]string{"default/client": {"pairs 10.244.0.21 . tcp . 5432"}},
	}})

	rs := Compile(PolicyInput{
		NodeName: thisNode,
		Pods: []*corev1.Pod{
			mkPod("default", "client", "10.244.0.20", client),
			mkPod("default", "db-0", "10.244.0.21", db, containerPort("pg", 5432, corev1.ProtocolTCP)),
		},
		Policies: []*networkingv1.NetworkPolicy{
			mkPolicy("default", "client", selOf(client), types(networkingv1.PolicyTypeEgress),
				egressRule(peers(podPeer(selOf(db))), named("pg", ""))),
		},
	})
	text := renderPolicy(t, rs, nil)
	for _, want := range []string{
		"add set inet kindnet-network-policies peerports_",
		"{ type ipv4_addr . inet_proto . inet_service ; }",
		"{ 10.244.0.21 . tcp . 5432 }",
		"egress_default_client ip daddr . meta l4proto . th dport @peerports_",
		"add rule inet kindnet-network-policies egress_default_client counter name egress-denied drop",
		"add element inet kindnet-network-policies egress-pods { 10.244.0.20 comment \"default/client\" : jump egress_default_client }",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the transaction lacks %q:\n%s", want, text)
		}
	}
}

func TestEndPortMakesAPortRangeAndAProtocolWithoutAPortMeansAllItsPorts(t *testing.T) {
	app := map[string]string{"app": "media"}
	udp := corev1.ProtocolUDP
	runCompilerCases(t, []compilerCase{{
		name: "TCP 32000-32768, all of UDP, SCTP 3868; overlapping TCP ports merge",
		in: PolicyInput{
			Pods: []*corev1.Pod{mkPod("default", "media", "10.244.0.30", app)},
			Policies: []*networkingv1.NetworkPolicy{
				mkPolicy("default", "media", selOf(app), ingressRule(nil,
					portRange(corev1.ProtocolTCP, 32000, 32768),
					tcp(32100),
					networkingv1.NetworkPolicyPort{Protocol: &udp},
					portRange(corev1.ProtocolSCTP, 3868, 3868))),
			},
		},
		wantIngress: map[string][]string{"default/media": {"any peer on sctp . 3868, tcp . 32000-32768, udp . 0-65535"}},
	}, {
		name: "a port without protocol is TCP",
		in: PolicyInput{
			Pods: []*corev1.Pod{mkPod("default", "media", "10.244.0.30", app)},
			Policies: []*networkingv1.NetworkPolicy{
				mkPolicy("default", "media", selOf(app), ingressRule(nil, func() networkingv1.NetworkPolicyPort {
					p := tcp(8443)
					p.Protocol = nil
					return p
				}())),
			},
		},
		wantIngress: map[string][]string{"default/media": {"any peer on tcp . 8443"}},
	}})
}

func TestNamespaceAndPodSelectorsChooseThePeersTheDocsSay(t *testing.T) {
	target := map[string]string{"app": "target"}
	nsA := mkNamespace("team-a", map[string]string{"team": "a"})
	nsB := mkNamespace("team-b", map[string]string{"team": "b"})
	pods := []*corev1.Pod{
		mkPod("team-a", "target", "10.244.0.40", target),
		mkPod("team-a", "client", "10.244.0.41", map[string]string{"role": "client"}),
		mkPod("team-a", "other", "10.244.0.42", map[string]string{"role": "other"}),
		mkPod("team-b", "client", "10.244.1.43", map[string]string{"role": "client"}, onNode("kind-worker2")),
		mkPod("team-b", "other", "10.244.1.44", map[string]string{"role": "other"}, onNode("kind-worker2")),
	}
	policy := func(peer networkingv1.NetworkPolicyPeer) []*networkingv1.NetworkPolicy {
		return []*networkingv1.NetworkPolicy{mkPolicy("team-a", "target", selOf(target), ingressRule(peers(peer)))}
	}
	both := networkingv1.NetworkPolicyPeer{NamespaceSelector: sel("team", "b"), PodSelector: sel("role", "client")}
	exprs := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		{Key: "team", Operator: metav1.LabelSelectorOpIn, Values: []string{"a", "b"}},
		{Key: "frozen", Operator: metav1.LabelSelectorOpDoesNotExist},
	}}
	podExprs := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		{Key: "role", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"other"}},
		{Key: "role", Operator: metav1.LabelSelectorOpExists},
	}}
	runCompilerCases(t, []compilerCase{{
		name:        "a podSelector alone selects pods of the policy's namespace",
		in:          PolicyInput{Namespaces: []*corev1.Namespace{nsA, nsB}, Pods: pods, Policies: policy(podPeer(sel("role", "client")))},
		wantIngress: map[string][]string{"team-a/target": {"10.244.0.41 on any port"}},
	}, {
		name:        "a namespaceSelector alone selects every pod of the matching namespaces",
		in:          PolicyInput{Namespaces: []*corev1.Namespace{nsA, nsB}, Pods: pods, Policies: policy(nsPeer(sel("team", "b")))},
		wantIngress: map[string][]string{"team-a/target": {"10.244.1.43-10.244.1.44 on any port"}},
	}, {
		name:        "both select the matching pods of the matching namespaces",
		in:          PolicyInput{Namespaces: []*corev1.Namespace{nsA, nsB}, Pods: pods, Policies: policy(both)},
		wantIngress: map[string][]string{"team-a/target": {"10.244.1.43 on any port"}},
	}, {
		name: "an empty namespaceSelector selects every namespace",
		in: PolicyInput{Namespaces: []*corev1.Namespace{nsA, nsB}, Pods: pods,
			Policies: policy(networkingv1.NetworkPolicyPeer{NamespaceSelector: sel(), PodSelector: sel("role", "client")})},
		wantIngress: map[string][]string{"team-a/target": {"10.244.0.41, 10.244.1.43 on any port"}},
	}, {
		name: "matchExpressions (In, NotIn, Exists, DoesNotExist) select like matchLabels",
		in: PolicyInput{Namespaces: []*corev1.Namespace{nsA, nsB}, Pods: pods,
			Policies: policy(networkingv1.NetworkPolicyPeer{NamespaceSelector: exprs, PodSelector: podExprs})},
		wantIngress: map[string][]string{"team-a/target": {"10.244.0.41, 10.244.1.43 on any port"}},
	}, {
		name: "the namespace name label selects a namespace even before the namespace is seen",
		in: PolicyInput{Pods: pods,
			Policies: policy(nsPeer(sel(corev1.LabelMetadataName, "team-b")))},
		wantIngress: map[string][]string{"team-a/target": {"10.244.1.43-10.244.1.44 on any port"}},
	}})
}

func TestAnIPBlockAllowsItsCIDRMinusItsExceptions(t *testing.T) {
	app := map[string]string{"app": "api"}
	in := func(peer ...networkingv1.NetworkPolicyPeer) PolicyInput {
		return PolicyInput{
			Pods: []*corev1.Pod{mkPod("default", "api", "10.244.0.50", app)},
			Policies: []*networkingv1.NetworkPolicy{
				mkPolicy("default", "api", selOf(app), ingressRule(peers(peer...), tcp(443))),
			},
		}
	}
	runCompilerCases(t, []compilerCase{{
		name:        "10.0.0.0/8 except 10.1.0.0/16 and 10.2.3.0/24",
		in:          in(ipBlock("10.0.0.0/8", "10.1.0.0/16", "10.2.3.0/24")),
		wantIngress: map[string][]string{"default/api": {"10.0.0.0/16, 10.2.0.0-10.2.2.255, 10.2.4.0-10.255.255.255 on tcp . 443"}},
	}, {
		name:        "everything but the pod network",
		in:          in(ipBlock("0.0.0.0/0", "10.244.0.0/16")),
		wantIngress: map[string][]string{"default/api": {"0.0.0.0-10.243.255.255, 10.245.0.0-255.255.255.255 on tcp . 443"}},
	}, {
		name:        "an ipBlock also covers pod addresses, and blocks and pods merge",
		in:          in(ipBlock("10.244.0.48/29"), podPeer(sel())),
		wantIngress: map[string][]string{"default/api": {"10.244.0.48/29 on tcp . 443"}},
	}, {
		name:        "an IPv6 block matches no IPv4 traffic: the rule allows nothing",
		in:          in(ipBlock("fd00::/8")),
		wantIngress: map[string][]string{"default/api": {}},
	}, {
		name:        "0.0.0.0/0 is every address",
		in:          in(ipBlock("0.0.0.0/0")),
		wantIngress: map[string][]string{"default/api": {"0.0.0.0/0 on tcp . 443"}},
	}})
}

func TestPolicyTypesDefaultToIngressPlusEgressWhenThePolicyHasEgressRules(t *testing.T) {
	app := map[string]string{"app": "x"}
	pods := []*corev1.Pod{mkPod("default", "x", "10.244.0.60", app)}
	runCompilerCases(t, []compilerCase{{
		name: "no policyTypes and only ingress rules: isolated for ingress only",
		in: PolicyInput{Pods: pods, Policies: []*networkingv1.NetworkPolicy{
			mkPolicy("default", "p", selOf(app), ingressRule(nil, tcp(80)))}},
		wantIngress: map[string][]string{"default/x": {"any peer on tcp . 80"}},
	}, {
		name: "no policyTypes and egress rules: isolated both ways, ingress denied entirely",
		in: PolicyInput{Pods: pods, Policies: []*networkingv1.NetworkPolicy{
			mkPolicy("default", "p", selOf(app), egressRule(peers(ipBlock("192.0.2.0/24")), tcp(443)))}},
		wantIngress: map[string][]string{"default/x": {}},
		wantEgress:  map[string][]string{"default/x": {"192.0.2.0/24 on tcp . 443"}},
	}, {
		name: "policyTypes [Egress] with no rules: egress denied, ingress untouched",
		in: PolicyInput{Pods: pods, Policies: []*networkingv1.NetworkPolicy{
			mkPolicy("default", "p", selOf(app), types(networkingv1.PolicyTypeEgress), ingressRule(nil))}},
		wantEgress: map[string][]string{"default/x": {}},
	}, {
		name: "policyTypes [Ingress, Egress] with an empty egress rule: egress allowed everywhere",
		in: PolicyInput{Pods: pods, Policies: []*networkingv1.NetworkPolicy{
			mkPolicy("default", "p", selOf(app), types(networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress),
				egressRule(nil))}},
		wantIngress: map[string][]string{"default/x": {}},
		wantEgress:  map[string][]string{"default/x": {"any peer on any port"}},
	}})
}

func TestAnEmptyPodSelectorSelectsEveryPodOfThePolicysNamespace(t *testing.T) {
	runCompilerCases(t, []compilerCase{{
		name: "default-deny in journey isolates journey's pods only",
		in: PolicyInput{
			Pods: []*corev1.Pod{
				mkPod("journey", "a", "10.244.0.70", map[string]string{"app": "a"}),
				mkPod("journey", "b", "10.244.0.71", nil),
				mkPod("elsewhere", "c", "10.244.0.72", nil),
			},
			Policies: []*networkingv1.NetworkPolicy{mkPolicy("journey", "default-deny", sel())},
		},
		wantIngress: map[string][]string{"journey/a": {}, "journey/b": {}},
	}})
}

func TestHostNetworkAndFinishedPodsAreNeverIsolatedNorPeers(t *testing.T) {
	runCompilerCases(t, []compilerCase{{
		name: "host-network, succeeded, failed and address-less pods are left alone",
		in: PolicyInput{
			Pods: []*corev1.Pod{
				mkPod("kube-system", "kindnet-abcde", "172.18.0.2", nil, hostNetwork()),
				mkPod("kube-system", "done", "10.244.0.80", nil, phase(corev1.PodSucceeded)),
				mkPod("kube-system", "failed", "10.244.0.81", nil, phase(corev1.PodFailed)),
				mkPod("kube-system", "pending", "", nil, phase(corev1.PodPending)),
				mkPod("kube-system", "coredns", "10.244.0.82", map[string]string{"k8s-app": "kube-dns"}),
			},
			Policies: []*networkingv1.NetworkPolicy{
				mkPolicy("kube-system", "all", sel(), ingressRule(peers(podPeer(sel())))),
			},
		},
		wantIngress: map[string][]string{"kube-system/coredns": {"10.244.0.82 on any port"}},
	}})
}

func TestPodsOnOtherNodesAreNotEnforcedHereButArePeers(t *testing.T) {
	app := map[string]string{"app": "x"}
	runCompilerCases(t, []compilerCase{{
		name: "the remote pod is selected by the policy but only the local one is isolated here",
		in: PolicyInput{
			Pods: []*corev1.Pod{
				mkPod("default", "local", "10.244.0.90", app),
				mkPod("default", "remote", "10.244.1.91", app, onNode("kind-worker2")),
			},
			Policies: []*networkingv1.NetworkPolicy{
				mkPolicy("default", "x", selOf(app), ingressRule(peers(podPeer(selOf(app))), tcp(7000))),
			},
		},
		wantIngress: map[string][]string{"default/local": {"10.244.0.90, 10.244.1.91 on tcp . 7000"}},
	}})
}

func TestTwoPoliciesSelectingAPodAreUnioned(t *testing.T) {
	app := map[string]string{"app": "x"}
	runCompilerCases(t, []compilerCase{{
		name: "each policy's rules are allowed; pods selected by one only get that one's",
		in: PolicyInput{
			Pods: []*corev1.Pod{
				mkPod("default", "x", "10.244.0.100", app),
				mkPod("default", "y", "10.244.0.101", map[string]string{"app": "y"}),
				mkPod("default", "monitor", "10.244.0.102", map[string]string{"role": "monitor"}),
			},
			Policies: []*networkingv1.NetworkPolicy{
				mkPolicy("default", "a-web", selOf(app), ingressRule(nil, tcp(80))),
				mkPolicy("default", "b-metrics", sel(), ingressRule(peers(podPeer(sel("role", "monitor"))), tcp(9100))),
			},
		},
		wantIngress: map[string][]string{
			"default/x":       {"any peer on tcp . 80", "10.244.0.102 on tcp . 9100"},
			"default/y":       {"10.244.0.102 on tcp . 9100"},
			"default/monitor": {"10.244.0.102 on tcp . 9100"},
		},
	}})
}

func TestEgressRulesListTheAllowedDestinations(t *testing.T) {
	app := map[string]string{"app": "x"}
	dns := map[string]string{"k8s-app": "kube-dns"}
	udp := corev1.ProtocolUDP
	dnsUDP := tcp(53)
	dnsUDP.Protocol = &udp
	runCompilerCases(t, []compilerCase{{
		name: "DNS to kube-dns in any namespace, HTTPS to one network",
		in: PolicyInput{
			Namespaces: []*corev1.Namespace{mkNamespace("kube-system", nil), mkNamespace("default", nil)},
			Pods: []*corev1.Pod{
				mkPod("default", "x", "10.244.0.110", app),
				mkPod("kube-system", "coredns-1", "10.244.0.2", dns),
				mkPod("kube-system", "coredns-2", "10.244.1.2", dns, onNode("kind-worker2")),
			},
			Policies: []*networkingv1.NetworkPolicy{
				mkPolicy("default", "x", selOf(app), types(networkingv1.PolicyTypeEgress),
					egressRule(peers(networkingv1.NetworkPolicyPeer{NamespaceSelector: sel(), PodSelector: selOf(dns)}), dnsUDP, tcp(53)),
					egressRule(peers(ipBlock("203.0.113.0/24")), tcp(443))),
			},
		},
		wantEgress: map[string][]string{"default/x": {
			"10.244.0.2, 10.244.1.2 on tcp . 53, udp . 53",
			"203.0.113.0/24 on tcp . 443",
		}},
	}})

	rs := Compile(PolicyInput{
		NodeName: thisNode,
		Pods:     []*corev1.Pod{mkPod("default", "x", "10.244.0.110", app)},
		Policies: []*networkingv1.NetworkPolicy{
			mkPolicy("default", "x", selOf(app), types(networkingv1.PolicyTypeEgress),
				egressRule(peers(ipBlock("203.0.113.0/24")), tcp(443))),
		},
	})
	text := renderPolicy(t, rs, nil)
	want := fmt.Sprintf("add rule inet kindnet-network-policies egress_default_x ip daddr @%s meta l4proto . th dport @%s return comment \"default/x egress[0]\"",
		setName("peers", "ipv4_addr", true, "203.0.113.0/24"),
		setName("ports", "inet_proto . inet_service", true, "tcp . 443"))
	if !strings.Contains(text, want) {
		t.Errorf("egress allows must return (so the destination's ingress policy still applies); want %q in:\n%s", want, text)
	}
}

func TestARuleWithoutPeersOrPortsAllowsEverythingAndPeersMatchingNothingAllowNothing(t *testing.T) {
	app := map[string]string{"app": "x"}
	pods := []*corev1.Pod{mkPod("default", "x", "10.244.0.120", app)}
	runCompilerCases(t, []compilerCase{{
		name: "an empty rule allows all",
		in: PolicyInput{Pods: pods, Policies: []*networkingv1.NetworkPolicy{
			mkPolicy("default", "x", selOf(app), ingressRule(nil))}},
		wantIngress: map[string][]string{"default/x": {"any peer on any port"}},
	}, {
		name: "a selector matching no pod allows nothing (the pod stays isolated)",
		in: PolicyInput{Pods: pods, Policies: []*networkingv1.NetworkPolicy{
			mkPolicy("default", "x", selOf(app), ingressRule(peers(podPeer(sel("app", "nobody"))), tcp(80)))}},
		wantIngress: map[string][]string{"default/x": {}},
	}})
	rs := Compile(PolicyInput{NodeName: thisNode, Pods: pods, Policies: []*networkingv1.NetworkPolicy{
		mkPolicy("default", "x", selOf(app), ingressRule(nil))}})
	if text := renderPolicy(t, rs, nil); !strings.Contains(text,
		"add rule inet kindnet-network-policies ingress_default_x accept comment \"default/x ingress[0]\"") {
		t.Errorf("an allow-all rule should render as a bare accept:\n%s", text)
	}
}

func TestIPv6AddressesOfIsolatedPodsAreReportedAsNotEnforced(t *testing.T) {
	app := map[string]string{"app": "x"}
	rs := Compile(PolicyInput{
		NodeName: thisNode,
		Pods: []*corev1.Pod{
			mkPod("default", "dual", "10.244.0.130", app, extraIP("fd00:10:244::130")),
			mkPod("default", "v6only", "fd00:10:244::131", app),
			mkPod("default", "v4", "10.244.0.132", app),
		},
		Policies: []*networkingv1.NetworkPolicy{mkPolicy("default", "x", selOf(app))},
	})
	if got := keys(rs.Ingress); !slices.Equal(got, []string{"default/dual", "default/v4"}) {
		t.Errorf("IPv4-enforced pods: got %v", got)
	}
	if !slices.Equal(rs.IPv6Skipped, []string{"default/dual", "default/v6only"}) {
		t.Errorf("IPv6 not enforced for: got %v", rs.IPv6Skipped)
	}
	if rs.IsolatedPods() != 2 {
		t.Errorf("isolated pods: got %d, want 2", rs.IsolatedPods())
	}
}

func TestUnusablePolicyContentIsSkippedWithAWarningAndFailsClosed(t *testing.T) {
	app := map[string]string{"app": "x"}
	sctpless := corev1.Protocol("ICMP")
	bad := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		{Key: "a", Operator: "Sometimes"},
	}}
	rs := Compile(PolicyInput{
		NodeName: thisNode,
		Pods:     []*corev1.Pod{mkPod("default", "x", "10.244.0.140", app)},
		Policies: []*networkingv1.NetworkPolicy{
			mkPolicy("default", "x", selOf(app),
				ingressRule(peers(podPeer(bad)), tcp(80)),
				ingressRule(nil, networkingv1.NetworkPolicyPort{Protocol: &sctpless})),
		},
	})
	if got := compiled(rs.Ingress); !equalAllows(got, map[string][]string{"default/x": {}}) {
		t.Errorf("got %s", show(got))
	}
	if len(rs.Warnings) != 2 {
		t.Errorf("want 2 warnings, got %q", rs.Warnings)
	}
}

func TestTwoLocalPodsWithOneAddressAreNotBothEnforced(t *testing.T) {
	app := map[string]string{"app": "x"}
	rs := Compile(PolicyInput{
		NodeName: thisNode,
		Pods: []*corev1.Pod{
			mkPod("default", "a", "10.244.0.150", app),
			mkPod("default", "b", "10.244.0.150", app),
		},
		Policies: []*networkingv1.NetworkPolicy{mkPolicy("default", "x", selOf(app))},
	})
	if got := keys(rs.Ingress); !slices.Equal(got, []string{"default/a"}) || len(rs.Warnings) != 1 {
		t.Errorf("isolated %v, warnings %q", got, rs.Warnings)
	}
}
