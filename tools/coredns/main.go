// Command coredns is the cluster DNS of Journey's kind node image, built from the CoreDNS
// module by scripts/tools/node.sh (no prebuilt downloads are reachable here). Upstream's main
// imports every plugin (core/plugin); this one imports only those a kubeadm-style Corefile uses,
// so most other directives fail at startup ("missing a plugin?") instead of being carried along
// untested (kubeadm's Corefile: errors, health, ready, kubernetes, prometheus, forward, cache,
// loop, reload, loadbalance). A few more register because these import them: debug, dnstap and
// metadata (forward) and transfer (kubernetes); `coredns -plugins` lists what is linked.
// The directive order stays upstream's (core/dnsserver/zdirectives.go).
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

func main() { coremain.Run() }
