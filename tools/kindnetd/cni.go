package main

// The CNI configuration of the node: ptp + host-local for the node's pod CIDR(s), then portmap.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"

	corev1 "k8s.io/api/core/v1"
)

type cniConfList struct {
	CNIVersion string `json:"cniVersion"`
	Name       string `json:"name"`
	Plugins    []any  `json:"plugins"`
}

type cniPTP struct {
	Type   string  `json:"type"`
	IPMasq bool    `json:"ipMasq"`
	MTU    int     `json:"mtu,omitempty"`
	IPAM   cniIPAM `json:"ipam"`
}

type cniIPAM struct {
	Type    string           `json:"type"`
	DataDir string           `json:"dataDir"`
	Routes  []cniRoute       `json:"routes"`
	Ranges  [][]cniIPAMRange `json:"ranges"`
}

type cniRoute struct {
	Dst string `json:"dst"`
}

type cniIPAMRange struct {
	Subnet string `json:"subnet"`
}

type cniPortmap struct {
	Type         string          `json:"type"`
	Capabilities map[string]bool `json:"capabilities"`
}

// cniInputs is what the CNI configuration depends on.
type cniInputs struct {
	PodCIDRs []string
	MTU      int // 0: let ptp use the kernel's default
}

// nodePodCIDRs returns the node's pod CIDRs (spec.podCIDRs, else spec.podCIDR).
func nodePodCIDRs(node *corev1.Node) []string {
	if len(node.Spec.PodCIDRs) > 0 {
		return slices.Clone(node.Spec.PodCIDRs)
	}
	if node.Spec.PodCIDR != "" {
		return []string{node.Spec.PodCIDR}
	}
	return nil
}

// renderCNIConfig produces the .conflist for the inputs.
func renderCNIConfig(in cniInputs) ([]byte, error) {
	if len(in.PodCIDRs) == 0 {
		return nil, errors.New("no pod CIDR")
	}
	var ranges [][]cniIPAMRange
	var hasV4, hasV6 bool
	for _, c := range in.PodCIDRs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return nil, fmt.Errorf("pod CIDR %q: %w", c, err)
		}
		if p.Addr().Is4() {
			hasV4 = true
		} else {
			hasV6 = true
		}
		ranges = append(ranges, []cniIPAMRange{{Subnet: p.Masked().String()}})
	}
	var routes []cniRoute
	if hasV4 {
		routes = append(routes, cniRoute{Dst: "0.0.0.0/0"})
	}
	if hasV6 {
		routes = append(routes, cniRoute{Dst: "::/0"})
	}
	conf := cniConfList{
		CNIVersion: "0.3.1",
		Name:       "kindnet",
		Plugins: []any{
			cniPTP{
				Type:   "ptp",
				IPMasq: false,
				MTU:    in.MTU,
				IPAM: cniIPAM{
					Type:    "host-local",
					DataDir: "/run/cni-ipam-state",
					Routes:  routes,
					Ranges:  ranges,
				},
			},
			cniPortmap{Type: "portmap", Capabilities: map[string]bool{"portMappings": true}},
		},
	}
	out, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding CNI config: %w", err)
	}
	return append(out, '\n'), nil
}

// interfaceMTU returns the MTU of the named interface, or 0 when it has none.
func interfaceMTU(name string) int {
	iface, err := net.InterfaceByName(name)
	if err != nil {
		return 0
	}
	return iface.MTU
}

// cniWriter writes the CNI config file atomically, and only when its content changes.
type cniWriter struct {
	path string
	last []byte
}

// write writes content unless the file already holds it; it reports whether it wrote.
func (w *cniWriter) write(content []byte) (bool, error) {
	if bytes.Equal(content, w.last) {
		return false, nil
	}
	if w.last == nil {
		// First call: a previous run may have written the same file.
		current, err := os.ReadFile(w.path)
		if err == nil && bytes.Equal(current, content) {
			w.last = content
			return false, nil
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return false, fmt.Errorf("reading %s: %w", w.path, err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(w.path), 0o755); err != nil {
		return false, fmt.Errorf("creating %s: %w", filepath.Dir(w.path), err)
	}
	// The runtime ignores files without a CNI extension, so the temporary file is never
	// read half-written; the rename makes the new config appear at once.
	tmp := w.path + ".temp"
	if err := writeFileSync(tmp, content); err != nil {
		return false, err
	}
	if err := os.Rename(tmp, w.path); err != nil {
		removeErr := os.Remove(tmp)
		return false, errors.Join(fmt.Errorf("renaming %s to %s: %w", tmp, w.path, err), removeErr)
	}
	w.last = content
	return true, nil
}

func writeFileSync(path string, content []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("creating %s: %w", path, err)
	}
	if _, err := f.Write(content); err != nil {
		return errors.Join(fmt.Errorf("writing %s: %w", path, err), f.Close())
	}
	if err := f.Sync(); err != nil {
		return errors.Join(fmt.Errorf("syncing %s: %w", path, err), f.Close())
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("closing %s: %w", path, err)
	}
	return nil
}
