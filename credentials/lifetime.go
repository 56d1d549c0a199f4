package credentials

import (
	"context"
	"sync"
)

// lifetime tracks the work an owner (the Manager, the Vault backend) does
// on its own behalf, detached from any caller: resolutions that outlive
// the pull that started them, logins shared by concurrent resolutions, the
// token keeper. close cancels that work, waits until it has returned, and
// refuses work begun afterwards, so that once the owner is closed none of
// its goroutines is left running and nothing opens a new connection.
type lifetime struct {
	ctx    context.Context // cancelled by close
	cancel context.CancelFunc

	mu     sync.Mutex
	closed bool
	work   sync.WaitGroup
}

func newLifetime() *lifetime {
	ctx, cancel := context.WithCancel(context.Background())
	return &lifetime{ctx: ctx, cancel: cancel}
}

// begin registers one piece of work. It returns ctx, also cancelled when
// the owner closes, and end, which the work calls when it returns; ok is
// false (and there is nothing to end) once the owner is closed.
func (l *lifetime) begin(ctx context.Context) (_ context.Context, end func(), ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, nil, false
	}
	l.work.Add(1)
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(l.ctx, cancel)
	return ctx, func() {
		stop()
		cancel()
		l.work.Done()
	}, true
}

// close cancels the work in flight, refuses new work and waits until every
// piece of work begun has ended. Calling it again waits as well.
func (l *lifetime) close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	l.cancel()
	l.work.Wait()
}
