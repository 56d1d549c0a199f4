package etcdmeta

import (
	"context"
	"testing"
	"time"
)

// TestWatchRecords: a record written through another client is reported;
// records of another kind are not; after etcd restarts, changes are
// reported again.
func TestWatchRecords(t *testing.T) {
	t.Parallel()
	o := newOpener(t, 0)
	a := o.open(t).(*Meta)
	b := o.second(t, a).(*Meta)
	calls := make(chan struct{}, 100)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.WatchRecords(ctx, "rules", func() { calls <- struct{}{} })
	}()
	t.Cleanup(func() { cancel(); <-done })
	wait := func(what string) {
		t.Helper()
		select {
		case <-calls:
		case <-time.After(20 * time.Second):
			t.Fatalf("no call after %s", what)
		}
	}
	wait("the start") // the first call, as the watch starts
	if err := b.PutRecord(t.Context(), "other", "x", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if err := b.PutRecord(t.Context(), "rules", "docker.io", []byte("1")); err != nil {
		t.Fatal(err)
	}
	wait("a put by another client")
	select {
	case <-calls:
		t.Fatal("a call for a record of another kind")
	default:
	}
	o.etcd.Restart()
	if err := b.DeleteRecord(t.Context(), "rules", "docker.io"); err != nil {
		t.Fatal(err)
	}
	wait("a delete after etcd restarted")
}

// TestTryLock: a held lock is refused to another client until unlocked,
// and a holder that vanishes without unlocking frees it within the TTL.
func TestTryLock(t *testing.T) {
	t.Parallel()
	o := newOpener(t, 0)
	a := o.open(t).(*Meta)
	b := o.second(t, a).(*Meta)
	unlock, ok, err := a.TryLock(t.Context(), "eviction")
	if err != nil || !ok {
		t.Fatalf("first TryLock: %v, %v", ok, err)
	}
	if _, ok, err := b.TryLock(t.Context(), "eviction"); ok || err != nil {
		t.Fatalf("TryLock of a held lock: %v, %v", ok, err)
	}
	if u, ok, err := b.TryLock(t.Context(), "other"); !ok || err != nil {
		t.Fatalf("TryLock of another lock: %v, %v", ok, err)
	} else {
		u()
	}
	unlock()
	unlockB, ok, err := b.TryLock(t.Context(), "eviction")
	if !ok || err != nil {
		t.Fatalf("TryLock after unlock: %v, %v", ok, err)
	}
	_ = unlockB
	// b's client goes away without unlocking: its lease is no longer
	// kept alive and expires.
	b.Close()
	deadline := time.Now().Add(3 * lockTTL * time.Second)
	for {
		u, ok, err := a.TryLock(t.Context(), "eviction")
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			u()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the lock of a closed client was not freed within %v", 3*lockTTL*time.Second)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
