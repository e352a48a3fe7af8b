package main

// Routes to the other nodes' pod CIDRs, via their InternalIP.

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"
)

// podRoute is a route to a pod CIDR of another node, via that node's address.
type podRoute struct {
	Node string
	Dst  netip.Prefix
	Via  netip.Addr
}

func (r podRoute) String() string { return fmt.Sprintf("%s via %s (node %s)", r.Dst, r.Via, r.Node) }

// nodeInternalIPs returns the node's InternalIP addresses.
func nodeInternalIPs(node *corev1.Node) []netip.Addr {
	var out []netip.Addr
	for _, a := range node.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		// An unparsable address (the kubelet reports valid ones) cannot be routed to: skipped.
		if ip, err := netip.ParseAddr(a.Address); err == nil {
			out = append(out, ip.Unmap())
		}
	}
	return out
}

// findSelf returns the node whose InternalIP is hostIP, else the node named hostname.
func findSelf(nodes []*corev1.Node, hostIP, hostname string) *corev1.Node {
	if ip, err := netip.ParseAddr(hostIP); err == nil {
		for _, n := range nodes {
			if slices.Contains(nodeInternalIPs(n), ip.Unmap()) {
				return n
			}
		}
	}
	for _, n := range nodes {
		if n.Name == hostname {
			return n
		}
	}
	return nil
}

// desiredRoutes computes the routes to the pod CIDRs of every node but self: each CIDR via the
// node's InternalIP of the same family. Nodes without one are skipped.
func desiredRoutes(nodes []*corev1.Node, self string) []podRoute {
	var out []podRoute
	for _, n := range nodes {
		if n.Name == self {
			continue
		}
		ips := nodeInternalIPs(n)
		for _, c := range nodePodCIDRs(n) {
			dst, err := netip.ParsePrefix(c)
			if err != nil {
				continue // the API server validates pod CIDRs
			}
			dst = dst.Masked()
			for _, ip := range ips {
				if ip.Is4() == dst.Addr().Is4() {
					out = append(out, podRoute{Node: n.Name, Dst: dst, Via: ip})
					break
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b podRoute) int { return strings.Compare(a.Dst.String(), b.Dst.String()) })
	return out
}

// routeSyncer installs routes with netlink and removes the ones it installed that are no
// longer wanted (a node that left).
type routeSyncer struct {
	installed map[netip.Prefix]netip.Addr
}

func toIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func family(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

func (s *routeSyncer) sync(want []podRoute) error {
	if s.installed == nil {
		s.installed = map[netip.Prefix]netip.Addr{}
	}
	var errs []error
	wanted := map[netip.Prefix]bool{}
	for _, r := range want {
		wanted[r.Dst] = true
		if err := ensureRoute(r); err != nil {
			errs = append(errs, fmt.Errorf("route %s: %w", r, err))
			continue
		}
		s.installed[r.Dst] = r.Via
	}
	for dst, via := range s.installed {
		if wanted[dst] {
			continue
		}
		route := &netlink.Route{Dst: toIPNet(dst), Gw: net.IP(via.AsSlice())}
		if err := netlink.RouteDel(route); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("deleting route %s via %s: %w", dst, via, err))
			continue
		}
		klog.Infof("routes: removed %s via %s (its node is gone)", dst, via)
		delete(s.installed, dst)
	}
	return errors.Join(errs...)
}

// ensureRoute makes the main table route r.Dst via r.Via, replacing routes to r.Dst through
// another gateway.
func ensureRoute(r podRoute) error {
	dst := toIPNet(r.Dst)
	gw := net.IP(r.Via.AsSlice())
	existing, err := netlink.RouteListFiltered(family(r.Via), &netlink.Route{Dst: dst}, netlink.RT_FILTER_DST)
	if err != nil {
		return fmt.Errorf("listing routes: %w", err)
	}
	found := false
	for i := range existing {
		if existing[i].Gw.Equal(gw) {
			found = true
			continue
		}
		if err := netlink.RouteDel(&existing[i]); err != nil {
			return fmt.Errorf("deleting stale route %s: %w", existing[i], err)
		}
		klog.Infof("routes: removed stale route %s", existing[i])
	}
	if found {
		return nil
	}
	if err := netlink.RouteAdd(&netlink.Route{Dst: dst, Gw: gw}); err != nil {
		return fmt.Errorf("adding: %w", err)
	}
	klog.Infof("routes: added %s", r)
	return nil
}
