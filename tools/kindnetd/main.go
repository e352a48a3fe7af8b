// Command kindnetd is Journey's stand-in for kind's CNI daemon kindnetd, built and tagged as
// the image kind's node image expects: docker.io/kindest/kindnetd:v20260820-69b56db7
// (kind v0.33.0). It runs under kind's own DaemonSet manifest unchanged.
//
// Why: upstream kindnetd is the nested Go module sigs.k8s.io/kind/images/kindnetd, which the
// Go module proxy reachable here does not serve, and it enforces NetworkPolicy through
// sigs.k8s.io/kube-network-policies, whose dataplane sends packets to userspace with the
// nftables "queue" expression, which the kernel here lacks (no CONFIG_NFT_QUEUE).
//
// What it does, like kindnetd:
//   - writes /etc/cni/net.d/10-kindnet.conflist (ptp + host-local for the node's pod CIDRs,
//     then portmap) once this node's Node object has a pod CIDR;
//   - routes the other nodes' pod CIDRs via their InternalIP (netlink), every 10 s and on
//     node changes;
//   - masquerades pod traffic leaving the cluster's pod subnets (POD_SUBNET), except to this
//     node's own addresses;
//   - enforces NetworkPolicy (networking.k8s.io/v1) for the pods of this node.
//
// What differs from upstream:
//   - NetworkPolicy is compiled by this program into a plain nftables ruleset (table
//     inet kindnet-network-policies: per isolated pod a chain, per policy rule one rule
//     matching nft sets of peer addresses and ports; denied new connections are dropped and
//     counted in the counters ingress-denied and egress-denied) instead of
//     kube-network-policies' nfqueue dataplane. Only the forward hook is used, so traffic
//     from and to the node itself (host-network pods, kubelet probes, port-forward, and a
//     pod's traffic to its own node's addresses) is never restricted. Only IPv4 traffic is
//     enforced; IPv6 addresses of isolated pods are logged as not enforced.
//   - Masquerading is an nftables table (inet kindnet-ipmasq) rather than the iptables nat
//     chain KIND-MASQ-AGENT, and it applies to traffic whose source is in the pod subnets.
//   - No NRI plugin (the /var/run/nri mount is unused), no iptables (/run/xtables.lock is
//     unused), no metrics or admin endpoints, no DNS cache, no node-local fast path.
//
// Environment (from kind's DaemonSet): HOST_IP, POD_IP, POD_SUBNET, optional
// CONTROL_PLANE_ENDPOINT (host:port, used when reachable instead of the in-cluster service).
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
)

func main() {
	os.Exit(run())
}

func run() int {
	networkPolicy := flag.Bool("network-policy", true,
		"enforce NetworkPolicy; when false, no policy table is created and an existing one is deleted")
	syncPeriod := flag.Duration("sync-period", 60*time.Second,
		"full resync period of the network policy and masquerade rules")
	cniPath := flag.String("cni-config", "/etc/cni/net.d/10-kindnet.conflist", "path of the CNI config to write")
	flag.Parse()
	defer klog.Flush()

	if *syncPeriod <= 0 {
		klog.Errorf("--sync-period must be positive, got %s", *syncPeriod)
		return 2
	}

	cfg := config{
		hostIP:        os.Getenv("HOST_IP"),
		podSubnet:     os.Getenv("POD_SUBNET"),
		cniPath:       *cniPath,
		networkPolicy: *networkPolicy,
		syncPeriod:    *syncPeriod,
	}
	hostname, err := os.Hostname()
	if err != nil {
		klog.Errorf("reading the hostname: %v", err)
	}
	cfg.hostname = hostname
	if podIP := os.Getenv("POD_IP"); podIP != cfg.hostIP {
		klog.Warningf("HOST_IP %q differs from POD_IP %q: kindnetd must run with hostNetwork", cfg.hostIP, podIP)
	}
	if cfg.podSubnetsV4, cfg.podSubnetsV6, err = parsePodSubnets(cfg.podSubnet); err != nil {
		klog.Errorf("masquerade disabled: %v", err)
	}
	klog.Infof("kindnetd (Journey stand-in) starting: host %s (HOST_IP %q), pod subnet %q, network policy enforcement %t, sync period %s",
		hostname, cfg.hostIP, cfg.podSubnet, cfg.networkPolicy, cfg.syncPeriod)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	restConfig, err := apiConfig(ctx, os.Getenv("CONTROL_PLANE_ENDPOINT"))
	if err != nil {
		klog.Errorf("API server configuration: %v", err)
		return 1
	}
	client, err := kubernetes.NewForConfig(restConfig)
	if err != nil {
		klog.Errorf("creating the API client for %s: %v", restConfig.Host, err)
		return 1
	}
	klog.Infof("API server: %s", restConfig.Host)

	if err := newDaemon(cfg, client).run(ctx); err != nil {
		klog.Errorf("exiting: %v", err)
		return 1
	}
	return 0
}

// apiConfig is the in-cluster config, pointed at CONTROL_PLANE_ENDPOINT when that is set and
// reachable (the in-cluster service address works only once kube-proxy has programmed it).
func apiConfig(ctx context.Context, endpoint string) (*rest.Config, error) {
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("in-cluster config: %w", err)
	}
	if endpoint == "" {
		return cfg, nil
	}
	for attempt := 1; attempt <= 5; attempt++ {
		dialer := net.Dialer{Timeout: time.Second}
		conn, err := dialer.DialContext(ctx, "tcp", endpoint)
		if err == nil {
			if cerr := conn.Close(); cerr != nil {
				klog.Warningf("closing the probe connection to %s: %v", endpoint, cerr)
			}
			cfg.Host = "https://" + endpoint
			return cfg, nil
		}
		klog.Warningf("CONTROL_PLANE_ENDPOINT %s not reachable (attempt %d/5): %v", endpoint, attempt, err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Duration(attempt) * time.Second):
		}
	}
	klog.Warningf("CONTROL_PLANE_ENDPOINT %s unreachable; using the in-cluster address %s", endpoint, cfg.Host)
	return cfg, nil
}
