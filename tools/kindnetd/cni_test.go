package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestTheCNIConfigIsPTPWithOneRangePerPodCIDRThenPortmap(t *testing.T) {
	for _, tc := range []struct {
		name       string
		in         cniInputs
		wantRoutes []string
		wantRanges []string
		wantMTU    any
	}{
		{"IPv4 with eth0's MTU", cniInputs{PodCIDRs: []string{"10.244.1.0/24"}, MTU: 1500},
			[]string{"0.0.0.0/0"}, []string{"10.244.1.0/24"}, 1500.0},
		{"dual stack without an MTU", cniInputs{PodCIDRs: []string{"10.244.1.0/24", "fd00:10:244:1::/64"}},
			[]string{"0.0.0.0/0", "::/0"}, []string{"10.244.1.0/24", "fd00:10:244:1::/64"}, nil},
		{"IPv6 only", cniInputs{PodCIDRs: []string{"fd00:10:244:1::/64"}, MTU: 9000},
			[]string{"::/0"}, []string{"fd00:10:244:1::/64"}, 9000.0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := renderCNIConfig(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			var conf struct {
				CNIVersion string           `json:"cniVersion"`
				Name       string           `json:"name"`
				Plugins    []map[string]any `json:"plugins"`
			}
			if err := json.Unmarshal(out, &conf); err != nil {
				t.Fatalf("not JSON: %v\n%s", err, out)
			}
			if conf.CNIVersion != "0.3.1" || conf.Name != "kindnet" || len(conf.Plugins) != 2 {
				t.Fatalf("unexpected config:\n%s", out)
			}
			ptp, portmap := conf.Plugins[0], conf.Plugins[1]
			if ptp["type"] != "ptp" || ptp["ipMasq"] != false || ptp["mtu"] != tc.wantMTU {
				t.Errorf("ptp plugin: %v", ptp)
			}
			ipam, _ := ptp["ipam"].(map[string]any)
			if ipam["type"] != "host-local" || ipam["dataDir"] != "/run/cni-ipam-state" {
				t.Errorf("ipam: %v", ipam)
			}
			var routes, ranges []string
			for _, r := range ipam["routes"].([]any) {
				routes = append(routes, r.(map[string]any)["dst"].(string))
			}
			for _, set := range ipam["ranges"].([]any) {
				rs := set.([]any)
				if len(rs) != 1 {
					t.Errorf("want one range per set, got %v", rs)
				}
				ranges = append(ranges, rs[0].(map[string]any)["subnet"].(string))
			}
			if !equalStrings(routes, tc.wantRoutes) || !equalStrings(ranges, tc.wantRanges) {
				t.Errorf("routes %v ranges %v, want %v %v", routes, ranges, tc.wantRoutes, tc.wantRanges)
			}
			caps, _ := portmap["capabilities"].(map[string]any)
			if portmap["type"] != "portmap" || caps["portMappings"] != true {
				t.Errorf("portmap plugin: %v", portmap)
			}
		})
	}
	if _, err := renderCNIConfig(cniInputs{}); err == nil {
		t.Error("a config without pod CIDR was rendered")
	}
	if _, err := renderCNIConfig(cniInputs{PodCIDRs: []string{"10.244.1.0"}}); err == nil {
		t.Error("a config with an invalid pod CIDR was rendered")
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestTheNodesPodCIDRsComeFromPodCIDRsElsePodCIDR(t *testing.T) {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n"}}
	if got := nodePodCIDRs(n); got != nil {
		t.Errorf("no CIDR: got %v", got)
	}
	n.Spec.PodCIDR = "10.244.2.0/24"
	if got := nodePodCIDRs(n); !equalStrings(got, []string{"10.244.2.0/24"}) {
		t.Errorf("podCIDR: got %v", got)
	}
	n.Spec.PodCIDRs = []string{"10.244.2.0/24", "fd00::/64"}
	if got := nodePodCIDRs(n); !equalStrings(got, []string{"10.244.2.0/24", "fd00::/64"}) {
		t.Errorf("podCIDRs: got %v", got)
	}
}

func TestTheCNIConfigIsWrittenAtomicallyAndOnlyWhenItChanges(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "net.d", "10-kindnet.conflist")
	w := &cniWriter{path: path}
	a, _ := renderCNIConfig(cniInputs{PodCIDRs: []string{"10.244.1.0/24"}})
	b, _ := renderCNIConfig(cniInputs{PodCIDRs: []string{"10.244.1.0/24"}, MTU: 1400})

	for i, step := range []struct {
		content   []byte
		wantWrote bool
	}{{a, true}, {a, false}, {b, true}, {b, false}, {a, true}} {
		wrote, err := w.write(step.content)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if wrote != step.wantWrote {
			t.Errorf("step %d: wrote=%t, want %t", i, wrote, step.wantWrote)
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != string(step.content) {
			t.Errorf("step %d: file holds %q (%v)", i, got, err)
		}
		if _, err := os.Stat(path + ".temp"); !os.IsNotExist(err) {
			t.Errorf("step %d: the temporary file was left behind (%v)", i, err)
		}
	}

	// A restarted daemon finds its file already right and does not rewrite it.
	again := &cniWriter{path: path}
	if wrote, err := again.write(a); err != nil || wrote {
		t.Errorf("after a restart: wrote=%t err=%v, want no write", wrote, err)
	}
}
