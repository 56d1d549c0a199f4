package cache

import (
	"context"
	"sync"
	"time"
)

// accessTimes batches the last-access times of served blobs in memory, so
// that a cache hit never writes to the metadata database; Flush writes them
// in one transaction.
type accessTimes struct {
	mu sync.Mutex
	m  map[string]time.Time
}

func newAccessTimes() *accessTimes { return &accessTimes{m: map[string]time.Time{}} }

func (a *accessTimes) touch(digest string) {
	a.mu.Lock()
	a.m[digest] = time.Now()
	a.mu.Unlock()
}

// take returns and clears the batch.
func (a *accessTimes) take() map[string]time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	m := a.m
	a.m = map[string]time.Time{}
	return m
}

// AccessRecorder persists blob access times (storage.Meta).
type AccessRecorder interface {
	TouchBlobs(ctx context.Context, times map[string]time.Time) error
}

// FlushAccess writes the access times gathered since the last flush.
func (p *Puller) FlushAccess(ctx context.Context) error {
	rec, ok := p.meta.(AccessRecorder)
	if !ok {
		return nil
	}
	batch := p.access.take()
	if len(batch) == 0 {
		return nil
	}
	return rec.TouchBlobs(ctx, batch)
}

// RunAccessFlusher flushes access times every interval until ctx ends,
// then once more.
func (p *Puller) RunAccessFlusher(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if err := p.FlushAccess(ctx); err != nil {
				p.log.Warn("flush access times", "err", err)
			}
		case <-ctx.Done():
			if err := p.FlushAccess(context.WithoutCancel(ctx)); err != nil {
				p.log.Warn("flush access times", "err", err)
			}
			return
		}
	}
}
