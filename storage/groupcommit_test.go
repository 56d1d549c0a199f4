package storage

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestGroupCommit: writes that queue while a transaction commits are
// committed together in the next one, every write is answered after its
// commit, and a failing write fails alone.
func TestGroupCommit(t *testing.T) {
	t.Parallel()
	m := openTestMeta(t)
	ctx := t.Context()

	// The first write holds its transaction open until released, so that
	// the others queue behind it.
	inFirst, release := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- m.updateGrouped("r0", func(tx *bolt.Tx) error {
			close(inFirst)
			<-release
			return putLink(tx, "r0", testLink("first"), nil)
		})
	}()
	<-inFirst

	const queued = 6
	var mu sync.Mutex
	runs := map[int]int{} // write -> times its function ran
	errs := make([]error, queued)
	var wg sync.WaitGroup
	for i := range queued {
		wg.Go(func() {
			repo := fmt.Sprintf("r%d", i+1)
			errs[i] = m.updateGrouped(repo, func(tx *bolt.Tx) error {
				mu.Lock()
				runs[i]++
				mu.Unlock()
				if i == 2 {
					return errors.New("this write fails")
				}
				return putLink(tx, repo, testLink(repo), &Tag{Name: "v1"})
			})
		})
	}
	// Wait until every write queued, then let the first commit.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		m.group.mu.Lock()
		n := len(m.group.queue)
		m.group.mu.Unlock()
		if n == queued {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d writes queued, want %d", n, queued)
		}
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatalf("first write: %v", err)
	}
	wg.Wait()

	// The grouped transaction failed at the failing write, so it ran
	// twice: in the group, then alone (as every write did again). Without
	// grouping it would have run once.
	if runs[2] != 2 {
		t.Errorf("the failing write ran %d times, want 2 (in the group, then alone)", runs[2])
	}
	for i, err := range errs {
		repo := fmt.Sprintf("r%d", i+1)
		if i == 2 {
			if err == nil {
				t.Errorf("%s: the failing write reported no error", repo)
			}
			if _, lerr := m.Tag(ctx, repo, "v1"); !errors.Is(lerr, ErrNotFound) {
				t.Errorf("%s: the failing write left a tag (%v)", repo, lerr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", repo, err)
		}
		if _, err := m.Tag(ctx, repo, "v1"); err != nil {
			t.Errorf("%s: tag not committed: %v", repo, err)
		}
	}
}

// TestGroupCommitGroups: without a failure, the writes queued behind a
// commit share one transaction.
func TestGroupCommitGroups(t *testing.T) {
	t.Parallel()
	m := openTestMeta(t)
	inFirst, release := make(chan struct{}), make(chan struct{})
	go m.updateGrouped("r0", func(tx *bolt.Tx) error {
		close(inFirst)
		<-release
		return nil
	})
	<-inFirst
	const queued = 5
	var mu sync.Mutex
	txIDs := map[int]bool{}
	var wg sync.WaitGroup
	for i := range queued {
		wg.Go(func() {
			repo := fmt.Sprintf("r%d", i+1)
			err := m.updateGrouped(repo, func(tx *bolt.Tx) error {
				mu.Lock()
				txIDs[tx.ID()] = true
				mu.Unlock()
				return putLink(tx, repo, testLink(repo), nil)
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	for {
		m.group.mu.Lock()
		n := len(m.group.queue)
		m.group.mu.Unlock()
		if n == queued {
			break
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	if len(txIDs) != 1 {
		t.Errorf("%d queued writes ran in %d transactions, want 1", queued, len(txIDs))
	}
}
