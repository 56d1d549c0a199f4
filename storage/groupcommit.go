package storage

import (
	"sync"

	bolt "go.etcd.io/bbolt"
)

// groupCommit puts the link and tag writes that arrive while one
// transaction commits into the next transaction together: one commit (two
// fsyncs) for all of them instead of one each. Under load (many tags
// revalidated at once, many fills finishing) a write waits for at most
// the commit in progress and its own, not for every write queued before
// it; alone, a write commits at once, with no added delay.
//
// The first writer to find no commit running commits the queue (its own
// write included); writes that queue meanwhile are committed by a
// goroutine it starts after its commit, and so on until the queue is
// empty. A write's function may run twice: when a grouped transaction
// fails, its writes run again one transaction each, so that one write's
// error is reported to that write only. Grouped functions must therefore
// change nothing but the transaction.
type groupCommit struct {
	mu      sync.Mutex
	queue   []*groupedWrite
	running bool
}

type groupedWrite struct {
	repo string
	fn   func(*bolt.Tx) error
	done chan error // capacity 1
}

// maxGroup bounds the writes of one transaction.
const maxGroup = 256

// updateGrouped is updateRepo for a write that may share its transaction
// with others (see groupCommit).
func (m *Meta) updateGrouped(repo string, fn func(*bolt.Tx) error) error {
	w := &groupedWrite{repo: repo, fn: fn, done: make(chan error, 1)}
	g := &m.group
	g.mu.Lock()
	g.queue = append(g.queue, w)
	lead := !g.running
	g.running = true
	g.mu.Unlock()
	if lead {
		if m.commitNext() {
			go m.drainGroups()
		}
	}
	return <-w.done
}

// drainGroups commits queued writes until the queue is empty.
func (m *Meta) drainGroups() {
	for m.commitNext() {
	}
}

// commitNext commits the writes queued now (at most maxGroup) and reports
// whether more are queued; when not, the next writer leads.
func (m *Meta) commitNext() bool {
	g := &m.group
	g.mu.Lock()
	n := min(len(g.queue), maxGroup)
	batch := g.queue[:n:n]
	g.queue = g.queue[n:]
	g.mu.Unlock()

	m.commitGroup(batch)

	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.queue) == 0 {
		g.running = false
		g.queue = nil
		return false
	}
	return true
}

// commitGroup runs batch in one transaction, or each write alone when the
// group fails, and answers every write after its commit.
func (m *Meta) commitGroup(batch []*groupedWrite) {
	var errs []error
	err := m.db.Update(func(tx *bolt.Tx) error {
		for _, w := range batch {
			if err := w.fn(tx); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil && len(batch) > 1 {
		errs = make([]error, len(batch))
		for i, w := range batch {
			errs[i] = m.db.Update(w.fn)
		}
	}
	// Readers must not keep what they read before these writes committed.
	for i, w := range batch {
		if i == 0 || w.repo != batch[i-1].repo {
			m.reads.changedRepo(w.repo)
		}
	}
	for i, w := range batch {
		if errs != nil {
			err = errs[i]
		}
		w.done <- full(err, "metadata")
	}
}
