package main

// Applying the nftables tables through knftables (which runs `nft -f -`).

import (
	"context"
	"fmt"
	"net/netip"
	"sync"

	"sigs.k8s.io/knftables"
)

// nftError is a failed nft transaction, with the transaction's text for the log.
type nftError struct {
	table   string
	err     error
	ruleset string
}

func (e *nftError) Error() string {
	return fmt.Sprintf("nft transaction on table inet %s failed: %v", e.table, e.err)
}

func (e *nftError) Unwrap() error { return e.err }

// nftTable gives the knftables.Interface of one inet table, created on first use (creating it
// runs nft, which can fail; the next sync tries again).
type nftTable struct {
	name string
	mu   sync.Mutex
	nft  knftables.Interface
}

func (t *nftTable) get() (knftables.Interface, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.nft == nil {
		nft, err := knftables.New(knftables.InetFamily, t.name)
		if err != nil {
			return nil, fmt.Errorf("nftables for table inet %s: %w", t.name, err)
		}
		t.nft = nft
	}
	return t.nft, nil
}

func runTx(ctx context.Context, table string, nft knftables.Interface, tx *knftables.Transaction) error {
	if err := nft.Run(ctx, tx); err != nil {
		return &nftError{table: table, err: err, ruleset: tx.String()}
	}
	return nil
}

// applyPolicyRuleset replaces the policy table's content with rs in one transaction.
func applyPolicyRuleset(ctx context.Context, nft knftables.Interface, rs *Ruleset) error {
	existing, err := nft.ListAll(ctx)
	if err != nil {
		if !knftables.IsNotFound(err) {
			return fmt.Errorf("listing table inet %s: %w", policyTableName, err)
		}
		existing = nil // no table yet
	}
	tx := nft.NewTransaction()
	WritePolicyTransaction(tx, rs, existing)
	return runTx(ctx, policyTableName, nft, tx)
}

// deletePolicyTable removes the policy table if it exists.
func deletePolicyTable(ctx context.Context, nft knftables.Interface) error {
	tx := nft.NewTransaction()
	WritePolicyTableDeletion(tx)
	return runTx(ctx, policyTableName, nft, tx)
}

// applyMasq (re)builds the masquerade table in one transaction.
func applyMasq(ctx context.Context, nft knftables.Interface, v4, v6 []netip.Prefix) error {
	tx := nft.NewTransaction()
	WriteMasqTransaction(tx, v4, v6)
	return runTx(ctx, masqTableName, nft, tx)
}
