package main

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func mkNode(name string, ips []string, cidrs ...string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	n.Spec.PodCIDRs = cidrs
	if len(cidrs) > 0 {
		n.Spec.PodCIDR = cidrs[0]
	}
	n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeHostName, Address: name})
	for _, ip := range ips {
		n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip})
	}
	return n
}

func TestRoutesGoToEveryOtherNodesPodCIDRsViaItsInternalIP(t *testing.T) {
	nodes := []*corev1.Node{
		mkNode("kind-control-plane", []string{"172.18.0.3"}, "10.244.0.0/24"),
		mkNode("kind-worker", []string{"172.18.0.2"}, "10.244.1.0/24"),
		mkNode("kind-worker2", []string{"172.18.0.4", "fc00:f853:ccd:e793::4"}, "10.244.2.0/24", "fd00:10:244:2::/64"),
		mkNode("kind-worker3", []string{"172.18.0.5"}), // no pod CIDR yet
		mkNode("kind-worker4", nil, "10.244.4.0/24"),   // no InternalIP
	}
	got := desiredRoutes(nodes, "kind-worker")
	want := []string{
		"10.244.0.0/24 via 172.18.0.3 (node kind-control-plane)",
		"10.244.2.0/24 via 172.18.0.4 (node kind-worker2)",
		"fd00:10:244:2::/64 via fc00:f853:ccd:e793::4 (node kind-worker2)",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %v\nwant %v", got, want)
	}
}

func TestThisNodeIsTheOneWhoseInternalIPIsHostIPElseTheHostname(t *testing.T) {
	nodes := []*corev1.Node{
		mkNode("kind-control-plane", []string{"172.18.0.3"}),
		mkNode("kind-worker", []string{"172.18.0.2"}),
	}
	for _, tc := range []struct{ hostIP, hostname, want string }{
		{"172.18.0.2", "whatever", "kind-worker"},
		{"", "kind-control-plane", "kind-control-plane"},
		{"172.18.0.9", "kind-worker", "kind-worker"},
		{"172.18.0.9", "elsewhere", ""},
	} {
		got := ""
		if n := findSelf(nodes, tc.hostIP, tc.hostname); n != nil {
			got = n.Name
		}
		if got != tc.want {
			t.Errorf("HOST_IP %q hostname %q: got %q, want %q", tc.hostIP, tc.hostname, got, tc.want)
		}
	}
}
