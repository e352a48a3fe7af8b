package main

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
)

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestTheDaemonRebuildsThePolicyTableFromWhatItsInformersSee(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	in := journeyExample()
	var objs []runtime.Object
	for _, o := range in.Namespaces {
		objs = append(objs, o)
	}
	for _, o := range in.Pods {
		objs = append(objs, o)
	}
	for _, o := range in.Policies {
		objs = append(objs, o)
	}
	client := fake.NewClientset(objs...)

	d := newDaemon(config{networkPolicy: true, syncPeriod: time.Minute}, client)
	d.nodeName = thisNode
	nft := knftablesFake()
	d.policyTable.nft = nft
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTransform(stripManagedFields))
	if err := d.setupPolicyInformers(factory); err != nil {
		t.Fatal(err)
	}
	factory.Start(ctx.Done())
	defer func() {
		cancel() // first: the informers stop with ctx, which Shutdown waits for
		factory.Shutdown()
	}()
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			t.Fatalf("%v did not sync", typ)
		}
	}

	if err := d.syncPolicy(ctx); err != nil {
		t.Fatal(err)
	}
	dump := nft.Dump()
	if !strings.Contains(dump, "10.244.0.5 comment \"journey/kafka-0\" : jump ingress_journey_kafka-0") ||
		strings.Contains(dump, "10.244.0.9") {
		t.Fatalf("first sync:\n%s", dump)
	}

	// A status-only update is ignored; a relabelled pod triggers a sync that makes it a peer.
	select {
	case <-d.policyTrigger: // the initial adds
	default:
	}
	foreign, err := client.CoreV1().Pods("journey").Get(ctx, "foreign", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	foreign.Status.Conditions = append(foreign.Status.Conditions, corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionTrue})
	if foreign, err = client.CoreV1().Pods("journey").UpdateStatus(ctx, foreign, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	select {
	case <-d.policyTrigger:
		t.Fatal("a pod condition change triggered a policy sync")
	default:
	}
	foreign.Labels = journeyLabels("api")
	if _, err := client.CoreV1().Pods("journey").Update(ctx, foreign, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.policyTrigger:
	case <-time.After(5 * time.Second):
		t.Fatal("relabelling a pod did not trigger a policy sync")
	}
	waitFor(t, "the relabelled pod in the cache", 5*time.Second, func() bool {
		p, err := d.pods.Pods("journey").Get("foreign")
		return err == nil && p.Labels["app.kubernetes.io/component"] == "api"
	})
	if err := d.syncPolicy(ctx); err != nil {
		t.Fatal(err)
	}
	if dump := nft.Dump(); !strings.Contains(dump, "10.244.0.9") {
		t.Fatalf("the relabelled pod is not a peer:\n%s", dump)
	}

	// Deleting the policy leaves an empty table, counters included.
	if err := client.NetworkingV1().NetworkPolicies("journey").Delete(ctx, "kafka", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the policy gone from the cache", 5*time.Second, func() bool {
		ps, err := d.policies.List(everything())
		return err == nil && len(ps) == 0
	})
	if err := d.syncPolicy(ctx); err != nil {
		t.Fatal(err)
	}
	dump = nft.Dump()
	if strings.Contains(dump, "ingress_journey_kafka-0") || strings.Contains(dump, "add set") ||
		!strings.Contains(dump, "add counter inet kindnet-network-policies ingress-denied") {
		t.Fatalf("after deleting the policy:\n%s", dump)
	}

	// --network-policy=false deletes the table.
	if err := d.removePolicyTable(ctx); err != nil {
		t.Fatal(err)
	}
	if dump := nft.Dump(); dump != "" {
		t.Fatalf("the table survived: %s", dump)
	}
	if err := d.removePolicyTable(ctx); err != nil {
		t.Fatalf("deleting a missing table: %v", err)
	}
}

func TestTheLoopSyncsAtOnceDebouncesTriggersAndRetriesFailuresWithBackoff(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	trigger := make(chan struct{}, 1)
	var calls atomic.Int32
	var fail atomic.Bool
	d := &daemon{}
	done := make(chan struct{})
	go func() {
		d.loop(ctx, "test", time.Hour, 100*time.Millisecond, trigger, func(context.Context) error {
			calls.Add(1)
			if fail.Load() {
				return errors.New("injected failure")
			}
			return nil
		})
		close(done)
	}()
	waitFor(t, "the first sync", 2*time.Second, func() bool { return calls.Load() == 1 })

	for range 10 {
		notify(trigger)
		time.Sleep(5 * time.Millisecond)
	}
	waitFor(t, "the debounced sync", 2*time.Second, func() bool { return calls.Load() == 2 })
	time.Sleep(300 * time.Millisecond)
	if n := calls.Load(); n != 2 {
		t.Fatalf("10 quick triggers made %d syncs, want 1", n-1)
	}

	fail.Store(true)
	notify(trigger)
	waitFor(t, "a retry after the failure", 4*time.Second, func() bool { return calls.Load() >= 4 })
	cancel()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("the loop did not stop with its context")
	}
}
