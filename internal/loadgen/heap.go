package loadgen

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"time"
)

// HeapStats is a process's memory after a full garbage collection.
type HeapStats struct {
	HeapAlloc   uint64 `json:"heap_alloc_bytes"`
	HeapInuse   uint64 `json:"heap_inuse_bytes"`
	HeapObjects uint64 `json:"heap_objects"`
	Sys         uint64 `json:"sys_bytes"`
	RSS         uint64 `json:"rss_bytes"`
	NumGC       uint32 `json:"num_gc"`
}

// ReadHeap collects garbage and reads this process's memory statistics.
func ReadHeap() HeapStats {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	rss, _ := ProcessRSS(os.Getpid())
	return HeapStats{HeapAlloc: m.HeapAlloc, HeapInuse: m.HeapInuse, HeapObjects: m.HeapObjects, Sys: m.Sys, RSS: rss, NumGC: m.NumGC}
}

// HeapHandler answers GET with this process's HeapStats as JSON, after a
// garbage collection: the gateway's hidden debug endpoint, which the bench
// reads before and after a long run to show that memory does not grow.
func HeapHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			http.Error(w, "GET only", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(ReadHeap())
	})
}

// FetchHeap asks a HeapHandler at url.
func FetchHeap(ctx context.Context, url string) (*HeapStats, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s answered %s", url, resp.Status)
	}
	var h HeapStats
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		return nil, err
	}
	return &h, nil
}
