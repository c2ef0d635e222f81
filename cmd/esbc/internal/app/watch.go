package app

import (
	"crypto/sha256"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"
)

// watcher turns file-system events in the directories of the watched
// files into one reload trigger per actual content change. It watches
// directories, not files, so that rename-replace (editors, `mv`) and
// symlink swaps (Kubernetes ConfigMap "..data") are seen; events are
// debounced, and a trigger fires only when the files' combined content
// differs from the last trigger's.
type watcher struct {
	events chan struct{}
	fw     *fsnotify.Watcher
	done   chan struct{}
	once   sync.Once
}

func newWatcher(log *zap.Logger, files func() []string, debounce time.Duration) *watcher {
	w := &watcher{events: make(chan struct{}, 1), done: make(chan struct{})}
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		log.Warn("file watcher unavailable: reload with SIGHUP", zap.Error(err))
		close(w.done)
		return w
	}
	w.fw = fw
	addDirs := func() {
		for _, f := range files() {
			if err := fw.Add(filepath.Dir(f)); err != nil {
				log.Debug("cannot watch directory", zap.String("dir", filepath.Dir(f)), zap.Error(err))
			}
		}
	}
	addDirs()
	last := sum(files())
	go func() {
		defer close(w.done)
		var timer *time.Timer
		var fire <-chan time.Time
		defer func() {
			if timer != nil {
				timer.Stop()
			}
		}()
		for {
			select {
			case _, ok := <-fw.Events:
				if !ok {
					return
				}
				if timer == nil {
					timer = time.NewTimer(debounce)
				} else {
					timer.Reset(debounce)
				}
				fire = timer.C
			case err, ok := <-fw.Errors:
				if !ok {
					return
				}
				log.Warn("file watcher", zap.Error(err))
			case <-fire:
				fire = nil
				addDirs()
				if now := sum(files()); now != last {
					last = now
					select {
					case w.events <- struct{}{}:
					default: // a trigger is already pending
					}
				}
			}
		}
	}()
	return w
}

// sum hashes the names and contents of files (missing files count as empty).
func sum(files []string) string {
	h := sha256.New()
	for _, f := range files {
		h.Write([]byte(f))
		h.Write([]byte{0})
		b, _ := os.ReadFile(f)
		h.Write(b)
		h.Write([]byte{0})
	}
	return string(h.Sum(nil))
}

func (w *watcher) close() {
	w.once.Do(func() {
		if w.fw != nil {
			_ = w.fw.Close()
		}
		<-w.done
	})
}
