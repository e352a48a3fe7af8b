package main

// Informers (list/watch only: kindnet's RBAC has no get), the sync loops, and the API watchdog.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	networkinglisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	"sigs.k8s.io/knftables"
)

const (
	nodeSyncPeriod      = 10 * time.Second
	policyDebounce      = 200 * time.Millisecond
	maxRetryBackoff     = 30 * time.Second
	apiCheckPeriod      = 30 * time.Second
	apiUnreachableLimit = 5 * time.Minute
)

// errAPIUnreachable ends the daemon (non-zero exit) so that the DaemonSet restarts it.
var errAPIUnreachable = errors.New("API server unreachable")

// config is what the daemon is given: environment and flags.
type config struct {
	hostIP        string
	hostname      string
	podSubnet     string
	podSubnetsV4  []netip.Prefix
	podSubnetsV6  []netip.Prefix
	cniPath       string
	networkPolicy bool
	syncPeriod    time.Duration
}

type daemon struct {
	cfg    config
	client kubernetes.Interface

	nodeName string

	nodes      corelisters.NodeLister
	pods       corelisters.PodLister
	namespaces corelisters.NamespaceLister
	policies   networkinglisters.NetworkPolicyLister

	nodeTrigger   chan struct{}
	policyTrigger chan struct{}

	cni    cniWriter
	routes routeSyncer

	masqTable   nftTable
	policyTable nftTable
	masqOK      bool

	waitingForCIDR bool
	lastWarnings   string
	lastIPv6       string
}

func newDaemon(cfg config, client kubernetes.Interface) *daemon {
	return &daemon{
		cfg:           cfg,
		client:        client,
		nodeTrigger:   make(chan struct{}, 1),
		policyTrigger: make(chan struct{}, 1),
		cni:           cniWriter{path: cfg.cniPath},
		masqTable:     nftTable{name: masqTableName},
		policyTable:   nftTable{name: policyTableName},
	}
}

func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default: // a sync is already pending
	}
}

// stripManagedFields keeps the informer caches small (the DaemonSet asks for 50Mi).
func stripManagedFields(obj any) (any, error) {
	// Objects without metadata (none expected) are kept as they are.
	if acc, err := meta.Accessor(obj); err == nil {
		acc.SetManagedFields(nil)
	}
	return obj, nil
}

// run starts the informers and the loops, and returns when ctx ends (SIGTERM) or the API
// server stayed unreachable for apiUnreachableLimit.
func (d *daemon) run(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	factory := informers.NewSharedInformerFactoryWithOptions(d.client, 0, informers.WithTransform(stripManagedFields))
	defer func() {
		// In this order: the informers and loops stop when ctx ends.
		cancel(nil)
		factory.Shutdown()
		wg.Wait()
	}()

	// Masquerade, and removing the policy table when enforcement is off, need nothing from
	// the API server.
	if len(d.cfg.podSubnetsV4)+len(d.cfg.podSubnetsV6) > 0 {
		wg.Go(func() { d.loop(ctx, "masquerade", d.cfg.syncPeriod, 0, nil, d.syncMasq) })
	}
	if !d.cfg.networkPolicy {
		wg.Go(func() { d.loop(ctx, "network policies (disabled)", d.cfg.syncPeriod, 0, nil, d.removePolicyTable) })
	}
	wg.Go(func() {
		if err := d.watchAPI(ctx); err != nil {
			cancel(err)
		}
	})

	nodeInformer := factory.Core().V1().Nodes()
	d.nodes = nodeInformer.Lister()
	if _, err := nodeInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { notify(d.nodeTrigger) },
		UpdateFunc: func(old, cur any) { notify(d.nodeTrigger) },
		DeleteFunc: func(any) { notify(d.nodeTrigger) },
	}); err != nil {
		return fmt.Errorf("node informer: %w", err)
	}
	if d.cfg.networkPolicy {
		if err := d.setupPolicyInformers(factory); err != nil {
			return err
		}
	}

	factory.Start(ctx.Done())
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			// Only an ended ctx stops the wait: SIGTERM (exit 0) or the API watchdog (exit 1).
			if cause := context.Cause(ctx); errors.Is(cause, errAPIUnreachable) {
				return fmt.Errorf("informer cache of %v did not sync: %w", typ, cause)
			}
			klog.Infof("stopping before the informer caches synced")
			return nil
		}
	}

	nodes, err := d.nodes.List(labels.Everything())
	if err != nil {
		return fmt.Errorf("listing nodes from the cache: %w", err)
	}
	if self := findSelf(nodes, d.cfg.hostIP, d.cfg.hostname); self != nil {
		d.nodeName = self.Name
		klog.Infof("this node: %s (InternalIP %v, pod CIDRs %v)", self.Name, nodeInternalIPs(self), nodePodCIDRs(self))
	} else {
		d.nodeName = d.cfg.hostname
		klog.Warningf("no Node has InternalIP %q; taking the hostname %q as this node's name", d.cfg.hostIP, d.nodeName)
	}

	wg.Go(func() { d.loop(ctx, "nodes", nodeSyncPeriod, 0, d.nodeTrigger, d.syncNodes) })
	if d.cfg.networkPolicy {
		wg.Go(func() {
			d.loop(ctx, "network policies", d.cfg.syncPeriod, policyDebounce, d.policyTrigger, d.syncPolicy)
		})
	}

	<-ctx.Done()
	if cause := context.Cause(ctx); errors.Is(cause, errAPIUnreachable) {
		return cause
	}
	klog.Infof("stopping; the nftables tables and routes stay in place")
	return nil
}

func (d *daemon) setupPolicyInformers(factory informers.SharedInformerFactory) error {
	trigger := func(any) { notify(d.policyTrigger) }
	podInformer := factory.Core().V1().Pods()
	d.pods = podInformer.Lister()
	if _, err := podInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: trigger,
		UpdateFunc: func(old, cur any) {
			o, ok1 := old.(*corev1.Pod)
			c, ok2 := cur.(*corev1.Pod)
			if !ok1 || !ok2 || podChangeMatters(o, c) {
				notify(d.policyTrigger)
			}
		},
		DeleteFunc: trigger,
	}); err != nil {
		return fmt.Errorf("pod informer: %w", err)
	}
	nsInformer := factory.Core().V1().Namespaces()
	d.namespaces = nsInformer.Lister()
	if _, err := nsInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: trigger,
		UpdateFunc: func(old, cur any) {
			o, ok1 := old.(*corev1.Namespace)
			c, ok2 := cur.(*corev1.Namespace)
			if !ok1 || !ok2 || !maps.Equal(o.Labels, c.Labels) {
				notify(d.policyTrigger)
			}
		},
		DeleteFunc: trigger,
	}); err != nil {
		return fmt.Errorf("namespace informer: %w", err)
	}
	npInformer := factory.Networking().V1().NetworkPolicies()
	d.policies = npInformer.Lister()
	if _, err := npInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    trigger,
		UpdateFunc: func(old, cur any) { notify(d.policyTrigger) },
		DeleteFunc: trigger,
	}); err != nil {
		return fmt.Errorf("networkpolicy informer: %w", err)
	}
	return nil
}

// podChangeMatters reports whether a pod update can change the compiled policy (status
// updates of conditions and container states do not).
func podChangeMatters(old, cur *corev1.Pod) bool {
	return old.Spec.NodeName != cur.Spec.NodeName ||
		old.Spec.HostNetwork != cur.Spec.HostNetwork ||
		old.Status.Phase != cur.Status.Phase ||
		old.Status.PodIP != cur.Status.PodIP ||
		!slices.Equal(old.Status.PodIPs, cur.Status.PodIPs) ||
		!maps.Equal(old.Labels, cur.Labels)
}

// loop runs sync at once, then every period, on trigger (after debounce, coalescing the
// triggers that come meanwhile), and after a failure again with exponential backoff. A nil
// trigger never fires.
func (d *daemon) loop(ctx context.Context, name string, period, debounce time.Duration,
	trigger <-chan struct{}, sync func(context.Context) error) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	var backoff time.Duration
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-trigger:
			if debounce > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(debounce):
				}
			}
		}
		// The sync reads the caches as they are now, which covers every event notified so
		// far (handlers run after the cache is updated): drop a pending trigger.
		select {
		case <-trigger:
		default:
		}
		err := sync(ctx)
		if ctx.Err() != nil {
			return
		}
		next := period
		if err != nil {
			backoff = min(max(2*backoff, time.Second), maxRetryBackoff)
			next = min(backoff, period)
			klog.Errorf("%s: sync failed (retrying in %s): %v", name, next, err)
			var nerr *nftError
			if errors.As(err, &nerr) {
				klog.Errorf("%s: the failed nft transaction was:\n%s", name, nerr.ruleset)
			}
		} else {
			backoff = 0
		}
		timer.Reset(next)
	}
}

// watchAPI checks the API server every apiCheckPeriod and returns errAPIUnreachable when it
// stayed unreachable for apiUnreachableLimit.
func (d *daemon) watchAPI(ctx context.Context) error {
	ticker := time.NewTicker(apiCheckPeriod)
	defer ticker.Stop()
	var failingSince time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
		reqCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := d.client.Discovery().RESTClient().Get().AbsPath("/version").Do(reqCtx).Raw()
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case err == nil && !failingSince.IsZero():
			klog.Infof("API server reachable again after %s", time.Since(failingSince).Round(time.Second))
			failingSince = time.Time{}
		case err != nil:
			if failingSince.IsZero() {
				failingSince = time.Now()
			}
			down := time.Since(failingSince)
			klog.Errorf("API server unreachable for %s: %v", down.Round(time.Second), err)
			if down >= apiUnreachableLimit {
				return fmt.Errorf("%w for %s: %v", errAPIUnreachable, down.Round(time.Second), err)
			}
		}
	}
}

// syncNodes writes the CNI config once this node has a pod CIDR, and routes the other nodes'
// pod CIDRs.
func (d *daemon) syncNodes(context.Context) error {
	nodes, err := d.nodes.List(labels.Everything())
	if err != nil {
		return fmt.Errorf("listing nodes from the cache: %w", err)
	}
	slices.SortFunc(nodes, func(a, b *corev1.Node) int { return strings.Compare(a.Name, b.Name) })
	var errs []error
	var self *corev1.Node
	for _, n := range nodes {
		if n.Name == d.nodeName {
			self = n
		}
	}
	switch {
	case self == nil:
		errs = append(errs, fmt.Errorf("node %q not found", d.nodeName))
	case len(nodePodCIDRs(self)) == 0:
		if !d.waitingForCIDR {
			klog.Infof("node %s has no pod CIDR yet; the CNI config waits for it", self.Name)
			d.waitingForCIDR = true
		}
	default:
		d.waitingForCIDR = false
		in := cniInputs{PodCIDRs: nodePodCIDRs(self), MTU: interfaceMTU("eth0")}
		content, err := renderCNIConfig(in)
		if err != nil {
			errs = append(errs, fmt.Errorf("CNI config for node %s: %w", self.Name, err))
			break
		}
		wrote, err := d.cni.write(content)
		if err != nil {
			errs = append(errs, fmt.Errorf("writing CNI config: %w", err))
		} else if wrote {
			klog.Infof("CNI config written to %s: pod CIDRs %v, MTU %d (0: kernel default)", d.cni.path, in.PodCIDRs, in.MTU)
		}
	}
	if err := d.routes.sync(desiredRoutes(nodes, d.nodeName)); err != nil {
		errs = append(errs, fmt.Errorf("routes: %w", err))
	}
	return errors.Join(errs...)
}

func (d *daemon) syncMasq(ctx context.Context) error {
	nft, err := d.masqTable.get()
	if err == nil {
		err = applyMasq(ctx, nft, d.cfg.podSubnetsV4, d.cfg.podSubnetsV6)
	}
	if err != nil {
		d.masqOK = false
		return err
	}
	if !d.masqOK {
		klog.Infof("masquerade: table inet %s applied: pod traffic to outside %s (not to this node) is masqueraded",
			masqTableName, d.cfg.podSubnet)
		d.masqOK = true
	}
	return nil
}

// policySnapshot reads the informer caches.
func (d *daemon) policySnapshot() (PolicyInput, error) {
	in := PolicyInput{NodeName: d.nodeName}
	var err error
	if in.Pods, err = d.pods.List(labels.Everything()); err != nil {
		return in, fmt.Errorf("listing pods from the cache: %w", err)
	}
	if in.Namespaces, err = d.namespaces.List(labels.Everything()); err != nil {
		return in, fmt.Errorf("listing namespaces from the cache: %w", err)
	}
	var policies []*networkingv1.NetworkPolicy
	if policies, err = d.policies.List(labels.Everything()); err != nil {
		return in, fmt.Errorf("listing network policies from the cache: %w", err)
	}
	in.Policies = policies
	return in, nil
}

func (d *daemon) syncPolicy(ctx context.Context) error {
	start := time.Now()
	in, err := d.policySnapshot()
	if err != nil {
		return err
	}
	rs := Compile(in)
	if w := strings.Join(rs.Warnings, "\n"); w != d.lastWarnings {
		for _, line := range rs.Warnings {
			klog.Warningf("network policies: %s", line)
		}
		d.lastWarnings = w
	}
	if v6 := strings.Join(rs.IPv6Skipped, ", "); v6 != d.lastIPv6 {
		if v6 != "" {
			klog.Warningf("network policies: IPv6 is not enforced; isolated pods with IPv6 addresses: %s", v6)
		}
		d.lastIPv6 = v6
	}
	nft, err := d.policyTable.get()
	if err != nil {
		return err
	}
	if err := applyPolicyRuleset(ctx, nft, rs); err != nil {
		return err
	}
	klog.Infof("network policies: %d policies, %d isolated local pods (ingress %d, egress %d), ruleset applied in %d ms",
		rs.Policies, rs.IsolatedPods(), len(rs.Ingress), len(rs.Egress), time.Since(start).Milliseconds())
	return nil
}

// removePolicyTable deletes the policy table when enforcement is disabled (it could be left by
// an earlier run); once done it only re-checks every sync period, quietly.
func (d *daemon) removePolicyTable(ctx context.Context) error {
	nft, err := d.policyTable.get()
	if err != nil {
		return err
	}
	if _, err := nft.List(ctx, "chains"); err != nil {
		if knftables.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("listing table inet %s: %w", policyTableName, err)
	}
	if err := deletePolicyTable(ctx, nft); err != nil {
		return err
	}
	klog.Infof("network policies: enforcement disabled (--network-policy=false); table inet %s deleted", policyTableName)
	return nil
}
