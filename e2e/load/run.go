package main

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// loadRun is one run of the program.
type loadRun struct {
	opts options
	work string
	logf func(format string, a ...any)
}

func newRNG() (*rand.ChaCha8, error) {
	var seed [32]byte
	if _, err := crand.Read(seed[:]); err != nil {
		return nil, err
	}
	return rand.NewChaCha8(seed), nil
}

// run prepares the upstream and regcache, measures the baseline, runs the
// load and waits for regcache to come back. The report holds what was
// measured, also when an error stopped the run part way.
func (l *loadRun) run(ctx context.Context) (*report, error) {
	o := l.opts
	rep := &report{Machine: describeMachine(), Config: configOf(o)}
	l.logf("building regcache (no -race)")
	bin, err := buildRegcache(ctx, l.work)
	if err != nil {
		return nil, err
	}
	up, err := startUpstream()
	if err != nil {
		return nil, err
	}
	defer up.close()
	rng, err := newRNG()
	if err != nil {
		return nil, err
	}
	var warm []*image
	for i := range o.warmImages {
		img, err := up.addImage(ctx, rng, fmt.Sprintf("load/warm%d", i), "v1", o.layerSizes, true)
		if err != nil {
			return nil, err
		}
		warm = append(warm, img)
	}
	rc, err := startRegcache(ctx, bin, l.work, up.url, o.perAddressCap)
	if err != nil {
		return nil, err
	}
	stopped := false
	defer func() {
		if !stopped {
			rc.kill()
		}
	}()
	l.logf("regcache on %s (pid %d), upstream on %s with %d warm images", rc.addr, rc.cmd.Process.Pid, up.url, len(warm))

	// Warm up: every warm image once through regcache, then wait for the
	// upstream to close regcache's idle connections.
	rec := newRecorder()
	w := &workload{base: rc.url(), warm: warm, rec: rec}
	hc := newClient()
	for _, img := range warm {
		for _, b := range append([]*blob{{digest: img.digest, size: int64(len(img.manifest)), data: img.manifest}}, img.blobs...) {
			path := "/blobs/" + b.digest
			if b.digest == img.digest {
				path = "/manifests/" + img.tag
			}
			if err := check(ctx, hc, rc.url()+"/v2/"+img.repo+path, b, -1, 0); err != nil {
				return nil, fmt.Errorf("warm-up pull of %s:%s: %w", img.repo, img.tag, err)
			}
		}
	}
	hc.CloseIdleConnections()
	// New images are made before the load, twice as many as it asks for
	// at one pull a second per client, and then more as they are taken:
	// under load, the one goroutine making them gets too small a share of
	// the CPU to keep up.
	fctx, stopFresh := context.WithCancel(ctx)
	defer stopFresh()
	freshRNG, err := newRNG()
	if err != nil {
		return nil, err
	}
	ahead := max(32, int(2*float64(o.clients)*o.duration.Seconds()*o.coldRatio/float64(o.coldFanout)))
	fresh, freshErr := up.newImages(fctx, freshRNG, o.coldLayerSize, o.coldFanout, ahead)
	for len(fresh) < cap(fresh) {
		select {
		case err := <-freshErr:
			return nil, fmt.Errorf("new images: %w", err)
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	l.logf("%d new images ready in the upstream", ahead)
	w.fresh, w.rangeRatio, w.coldRatio = fresh, o.rangeRatio, o.coldRatio

	time.Sleep(upstreamIdleTimeout + time.Second)
	if rep.Server.Baseline, err = rc.sample(ctx); err != nil {
		return nil, err
	}
	l.logf("baseline: %+v", rep.Server.Baseline)

	sampler := startSampler(ctx, rc)
	var atk *attackerGroup
	if o.idleConns > 0 {
		atk, err = startAttackers(ctx, rc.addr, o, 30*time.Second)
		if atk != nil {
			defer func() {
				if atk != nil {
					atk.stop()
				}
			}()
		}
		if err != nil {
			return nil, err
		}
		l.logf("attacker: %d processes dialing %d connections from %s", len(atk.procs), o.idleConns, o.attackerAddr)
	}

	l.logf("%d clients pulling for %v", o.clients, o.duration)
	lctx, endLoad := context.WithTimeout(ctx, o.duration)
	started := time.Now()
	var clients sync.WaitGroup
	for i := range o.clients {
		clients.Add(1)
		go func() { defer clients.Done(); w.client(lctx, uint64(i)+1) }()
	}
	clients.Wait()
	endLoad()
	rep.Seconds = time.Since(started).Seconds()
	stopFresh()
	rep.Server.Peak = sampler.stop()
	if atk != nil {
		s, err := atk.stop()
		atk = nil
		rep.Attacker = &s
		if err != nil {
			rep.Failures = append(rep.Failures, err.Error())
		}
	}
	rep.Kinds, rep.ClientErrors, rep.Events = rec.stats(), rec.first, rec.extras
	select {
	case err := <-freshErr:
		rep.Failures = append(rep.Failures, fmt.Sprintf("new images: %v", err))
	default:
	}
	if ctx.Err() != nil {
		return rep, ctx.Err()
	}

	l.logf("load done; waiting up to %v for regcache to come back to its baseline", o.settle)
	rep.Server.SettledAfter, rep.Server.After, err = l.settle(ctx, rc, rep.Server.Baseline)
	if err != nil {
		return rep, err
	}
	rep.Server.Settled = rep.Server.SettledAfter >= 0
	rep.Log.Warn, rep.Log.Error, rep.Log.FirstErrors = rc.logLevels()
	stopped = true
	if err := rc.stop(); err != nil {
		rep.Failures = append(rep.Failures, err.Error())
	}
	rep.Machine.LoadEnd = loadAverage()
	return rep, nil
}

// settle samples regcache every second until its goroutines and open
// files are back within the tolerances of base, for at most --settle. It
// returns how long that took since the load ended (-1: not back) and the
// last sample. The first sample is taken after the upstream closed
// regcache's idle connections, as for the baseline.
func (l *loadRun) settle(ctx context.Context, rc *regcacheProc, base sample) (float64, sample, error) {
	start := time.Now()
	select {
	case <-ctx.Done():
		return -1, sample{}, ctx.Err()
	case <-time.After(upstreamIdleTimeout + time.Second):
	}
	for {
		s, err := rc.sample(ctx)
		if err != nil {
			return -1, s, err
		}
		if s.Goroutines <= base.Goroutines+l.opts.tolGoroutines && s.OpenFiles <= base.OpenFiles+l.opts.tolFDs {
			return time.Since(start).Seconds(), s, nil
		}
		if time.Since(start) > l.opts.settle {
			return -1, s, nil
		}
		select {
		case <-ctx.Done():
			return -1, s, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// sampler samples regcache every second and keeps the largest figures.
type sampler struct {
	stopc chan struct{}
	done  chan struct{}
	peak  sample
}

func startSampler(ctx context.Context, rc *regcacheProc) *sampler {
	s := &sampler{stopc: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-s.stopc:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			v, err := rc.sample(ctx)
			if err != nil {
				continue // a sample lost under load is not the figure
			}
			s.peak.Goroutines = max(s.peak.Goroutines, v.Goroutines)
			s.peak.OpenFiles = max(s.peak.OpenFiles, v.OpenFiles)
			s.peak.Threads = max(s.peak.Threads, v.Threads)
			s.peak.RSSBytes = max(s.peak.RSSBytes, v.RSSBytes)
		}
	}()
	return s
}

func (s *sampler) stop() sample {
	close(s.stopc)
	<-s.done
	return s.peak
}

// verdict is the run's result: an error when a real client saw one, when
// regcache did not come back to its baseline, or when anything else failed.
func (r *report) verdict() error {
	var errs []error
	total := 0
	for _, k := range r.Kinds {
		if k.Errors > 0 {
			errs = append(errs, fmt.Errorf("%d errors on %s", k.Errors, k.Kind))
		}
		total += k.Requests
	}
	if total == 0 {
		errs = append(errs, errors.New("no request completed"))
	}
	if !r.Server.Settled {
		errs = append(errs, fmt.Errorf("regcache did not come back to its baseline within --settle: %d goroutines (baseline %d), %d open files (baseline %d)",
			r.Server.After.Goroutines, r.Server.Baseline.Goroutines, r.Server.After.OpenFiles, r.Server.Baseline.OpenFiles))
	}
	for _, f := range r.Failures {
		errs = append(errs, errors.New(f))
	}
	return errors.Join(errs...)
}
