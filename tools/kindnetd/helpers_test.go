package main

import (
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/knftables"
)

const thisNode = "kind-worker"

// journeyLabels are the labels of Journey's chart for a component.
func journeyLabels(component string) map[string]string {
	return map[string]string{
		"app.kubernetes.io/instance":  "journey",
		"app.kubernetes.io/name":      "journey",
		"app.kubernetes.io/component": component,
	}
}

type podOpt func(*corev1.Pod)

func onNode(node string) podOpt { return func(p *corev1.Pod) { p.Spec.NodeName = node } }

func hostNetwork() podOpt { return func(p *corev1.Pod) { p.Spec.HostNetwork = true } }

func phase(ph corev1.PodPhase) podOpt { return func(p *corev1.Pod) { p.Status.Phase = ph } }

func extraIP(ip string) podOpt {
	return func(p *corev1.Pod) { p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip}) }
}

func containerPort(name string, port int32, proto corev1.Protocol) podOpt {
	return func(p *corev1.Pod) {
		p.Spec.Containers[0].Ports = append(p.Spec.Containers[0].Ports,
			corev1.ContainerPort{Name: name, ContainerPort: port, Protocol: proto})
	}
}

// mkPod is a running pod on this node unless an option says otherwise.
func mkPod(ns, name, ip string, lbls map[string]string, opts ...podOpt) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: lbls},
		Spec: corev1.PodSpec{
			NodeName:   thisNode,
			Containers: []corev1.Container{{Name: "main"}},
		},
		Status: corev1.PodStatus{Phase: corev1.PodRunning},
	}
	if ip != "" {
		p.Status.PodIP = ip
		p.Status.PodIPs = []corev1.PodIP{{IP: ip}}
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

func mkNamespace(name string, lbls map[string]string) *corev1.Namespace {
	l := map[string]string{corev1.LabelMetadataName: name}
	for k, v := range lbls {
		l[k] = v
	}
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: l}}
}

func sel(kv ...string) *metav1.LabelSelector {
	s := &metav1.LabelSelector{MatchLabels: map[string]string{}}
	for i := 0; i+1 < len(kv); i += 2 {
		s.MatchLabels[kv[i]] = kv[i+1]
	}
	return s
}

func selOf(lbls map[string]string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: lbls}
}

func tcp(port int) networkingv1.NetworkPolicyPort {
	p := corev1.ProtocolTCP
	v := intstr.FromInt32(int32(port))
	return networkingv1.NetworkPolicyPort{Protocol: &p, Port: &v}
}

func named(name string, proto corev1.Protocol) networkingv1.NetworkPolicyPort {
	v := intstr.FromString(name)
	if proto == "" {
		return networkingv1.NetworkPolicyPort{Port: &v}
	}
	return networkingv1.NetworkPolicyPort{Protocol: &proto, Port: &v}
}

func portRange(proto corev1.Protocol, from, to int32) networkingv1.NetworkPolicyPort {
	v := intstr.FromInt32(from)
	return networkingv1.NetworkPolicyPort{Protocol: &proto, Port: &v, EndPort: &to}
}

func podPeer(s *metav1.LabelSelector) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{PodSelector: s}
}

func nsPeer(s *metav1.LabelSelector) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{NamespaceSelector: s}
}

func ipBlock(cidr string, except ...string) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: cidr, Except: except}}
}

type policyOpt func(*networkingv1.NetworkPolicy)

func types(ts ...networkingv1.PolicyType) policyOpt {
	return func(p *networkingv1.NetworkPolicy) { p.Spec.PolicyTypes = ts }
}

func ingressRule(from []networkingv1.NetworkPolicyPeer, ports ...networkingv1.NetworkPolicyPort) policyOpt {
	return func(p *networkingv1.NetworkPolicy) {
		p.Spec.Ingress = append(p.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{From: from, Ports: ports})
	}
}

func egressRule(to []networkingv1.NetworkPolicyPeer, ports ...networkingv1.NetworkPolicyPort) policyOpt {
	return func(p *networkingv1.NetworkPolicy) {
		p.Spec.Egress = append(p.Spec.Egress, networkingv1.NetworkPolicyEgressRule{To: to, Ports: ports})
	}
}

func peers(ps ...networkingv1.NetworkPolicyPeer) []networkingv1.NetworkPolicyPeer { return ps }

func mkPolicy(ns, name string, podSelector *metav1.LabelSelector, opts ...policyOpt) *networkingv1.NetworkPolicy {
	p := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       networkingv1.NetworkPolicySpec{PodSelector: *podSelector},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

// journeyExample is the example of the brief: Kafka admits only Journey's own pods on 9092
// and 9093.
func journeyExample() PolicyInput {
	return PolicyInput{
		NodeName:   thisNode,
		Namespaces: []*corev1.Namespace{mkNamespace("journey", nil)},
		Pods: []*corev1.Pod{
			mkPod("journey", "kafka-0", "10.244.0.5", journeyLabels("kafka")),
			mkPod("journey", "foreign", "10.244.0.9", map[string]string{"app": "other"}),
		},
		Policies: []*networkingv1.NetworkPolicy{
			mkPolicy("journey", "kafka", selOf(journeyLabels("kafka")),
				types(networkingv1.PolicyTypeIngress),
				ingressRule(peers(podPeer(sel("app.kubernetes.io/instance", "journey", "app.kubernetes.io/name", "journey"))),
					tcp(9092), tcp(9093))),
		},
	}
}

// renderPolicy renders a ruleset as the nft text of a transaction on an empty table.
func renderPolicy(t *testing.T, rs *Ruleset, existing map[string][]string) string {
	t.Helper()
	tx := knftables.NewFake(knftables.InetFamily, policyTableName).NewTransaction()
	WritePolicyTransaction(tx, rs, existing)
	return tx.String()
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// podRules finds the rules of a pod in a direction's list.
func podRules(t *testing.T, list []PodRules, key string) PodRules {
	t.Helper()
	for _, p := range list {
		if p.Key() == key {
			return p
		}
	}
	t.Fatalf("pod %s is not isolated in this direction (isolated: %v)", key, keys(list))
	return PodRules{}
}

func keys(list []PodRules) []string {
	var out []string
	for _, p := range list {
		out = append(out, p.Key())
	}
	return out
}

func knftablesFake() *knftables.Fake { return knftables.NewFake(knftables.InetFamily, policyTableName) }

func everything() labels.Selector { return labels.Everything() }
