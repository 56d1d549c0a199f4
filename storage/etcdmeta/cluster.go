package etcdmeta

import (
	"context"
	"fmt"
	"os"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// lockTTL is how long a lock outlives its holder's last keep-alive: a
// killed holder frees it within this time.
const lockTTL = 10 // seconds

// rewatchDelay is the pause before watching again after a watch ended
// with an error (etcd unreachable, the member lost its leader).
const rewatchDelay = time.Second

// WatchRecords calls changed after records of kind were changed by any
// process, until ctx ends. Calls are serial and coalesced: changes that
// arrive while changed runs make one more call. When the watch had to
// start over and changes may have been missed (etcd restarted beyond what
// the client resumes, or compacted the revisions it needed) changed is
// called once too, so a caller that reloads on each call never keeps a
// stale view. It also calls changed once as the watch starts, so that a
// change between the caller's first read and the watch is not missed.
func (m *Meta) WatchRecords(ctx context.Context, kind string, changed func()) {
	if err := checkKind(kind); err != nil {
		m.log.Error("etcd: watch records", "err", err)
		return
	}
	prefix := m.keys.records(kind)
	kick := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-kick:
				changed()
			}
		}
	}()
	notify := func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	defer func() { <-done }()
	notify()

	var rev int64 // the last revision seen; 0 until read
	for ctx.Err() == nil {
		if rev == 0 {
			resp, err := m.cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
			if err != nil {
				m.log.Warn("etcd: watch records: read revision", "kind", kind, "err", err)
				sleep(ctx, rewatchDelay)
				continue
			}
			rev = resp.Header.Revision
		}
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		missed := false
		for wr := range m.cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
			if wr.CompactRevision != 0 {
				m.log.Warn("etcd: watch records: revisions compacted, reloading", "kind", kind, "from", rev+1, "compacted", wr.CompactRevision)
				missed = true
				break
			}
			if err := wr.Err(); err != nil {
				m.log.Warn("etcd: watch records", "kind", kind, "err", err)
				break
			}
			if len(wr.Events) > 0 {
				rev = wr.Events[len(wr.Events)-1].Kv.ModRevision
				notify()
			}
		}
		cancel()
		if missed {
			rev = 0
			notify()
		}
		sleep(ctx, rewatchDelay)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// TryLock takes the cluster-wide lock name unless another process holds
// it (ok false). The lock is a key attached to an etcd lease of 10 s that
// a goroutine keeps alive: unlock revokes the lease, and a holder that
// dies or loses etcd frees the lock when its lease expires.
func (m *Meta) TryLock(ctx context.Context, name string) (unlock func(), ok bool, err error) {
	key := m.keys.lock(name)
	// The session outlives ctx: it lasts until unlock.
	sess, err := concurrency.NewSession(m.cli, concurrency.WithTTL(lockTTL), concurrency.WithContext(context.WithoutCancel(ctx)))
	if err != nil {
		return nil, false, fmt.Errorf("lock %s: %w", name, wrap(err))
	}
	host, _ := os.Hostname()
	holder := fmt.Sprintf("%s pid %d", host, os.Getpid())
	resp, err := m.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, holder, clientv3.WithLease(sess.Lease()))).
		Commit()
	if err != nil || !resp.Succeeded {
		sess.Close()
		if err != nil {
			return nil, false, fmt.Errorf("lock %s: %w", name, wrap(err))
		}
		return nil, false, nil
	}
	return func() {
		if err := sess.Close(); err != nil {
			m.log.Warn("etcd: unlock: the lock is freed when its lease expires", "lock", name, "err", err)
		}
	}, true, nil
}
