package etcdmeta

import (
	"context"
	"fmt"
	"strings"
)

// PutRecord stores value under kind/key, replacing any earlier value.
func (m *Meta) PutRecord(ctx context.Context, kind, key string, value []byte) error {
	if err := checkKind(kind); err != nil {
		return err
	}
	if _, err := m.cli.Put(ctx, m.keys.record(kind, key), string(value)); err != nil {
		return fmt.Errorf("store %s %q: %w", kind, key, wrap(err))
	}
	return nil
}

// DeleteRecord removes kind/key; it returns storage.ErrNotFound when
// absent.
func (m *Meta) DeleteRecord(ctx context.Context, kind, key string) error {
	if err := checkKind(kind); err != nil {
		return err
	}
	return m.deleteExisting(ctx, m.keys.record(kind, key), fmt.Sprintf("%s %q", kind, key))
}

// Records returns every record of kind, keyed by key.
func (m *Meta) Records(ctx context.Context, kind string) (map[string][]byte, error) {
	if err := checkKind(kind); err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	under := m.keys.records(kind)
	if _, err := m.getAll(ctx, under, 0, false, func(k string, v []byte) error {
		out[strings.TrimPrefix(k, under)] = v
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list %s: %w", kind, err)
	}
	return out, nil
}
