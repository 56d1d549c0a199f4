package credentials

import (
	"context"
	"encoding/json"
	"fmt"
)

// stored parses and validates a persisted set; config holds the config
// file's sets, whose names a persisted set cannot take.
func (m *Manager) stored(raw []byte, config map[string]*entry) (*entry, error) {
	var r record
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, err
	}
	e, err := m.valid.entry(Set{Name: r.Name, LoginServer: r.LoginServer, UsernameSecretRef: r.UsernameSecretRef, PasswordSecretRef: r.PasswordSecretRef}, OriginAPI)
	if err != nil {
		return nil, err
	}
	if c := config[e.set.Name]; c != nil && c.set.Origin == OriginConfig {
		return nil, fmt.Errorf("a credential set of the config file has this name")
	}
	return e, nil
}

// Reload reads the persisted sets again: another replica sharing the
// metadata store created, updated or deleted some. A set whose definition
// is unchanged keeps its cached values and health; a new or changed one
// is checked soon, as after Create. Sets of the config file stay as they
// are.
func (m *Manager) Reload(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	stored, err := m.opts.Records.Records(ctx, recordKind)
	if err != nil {
		return fmt.Errorf("load credential sets: %w", err)
	}
	old := *m.sets.Load()
	sets := make(map[string]*entry, len(stored)+len(old))
	for name, e := range old {
		if e.set.Origin == OriginConfig {
			sets[name] = e
		}
	}
	var changed []string
	for name, raw := range stored {
		e, err := m.stored(raw, sets)
		if err != nil {
			if old[name] != nil && old[name].set.Origin == OriginAPI {
				m.opts.Log.ErrorContext(ctx, "stored credential set ignored", "set", name, "err", err)
			}
			continue
		}
		if prev := old[e.set.Name]; prev != nil && prev.set == e.set {
			sets[e.set.Name] = prev
			continue
		}
		sets[e.set.Name] = e
		changed = append(changed, e.set.Name)
	}
	if len(changed) == 0 && len(sets) == len(old) {
		return nil // nothing new: the same sets, the same entries
	}
	m.sets.Store(&sets)
	for _, name := range changed {
		select {
		case m.kick <- name:
		default: // Run checks it at the next interval
		}
	}
	return nil
}
