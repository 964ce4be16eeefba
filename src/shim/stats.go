// stats.go - Stats: the guest cgroup of the container's init process (the agent gives every exec
// its own cgroup v2), read by capsem-ctr-init and returned as containerd's cgroups v2 metrics.

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	v2 "github.com/containerd/cgroups/v2/stats"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/errdefs"
	taskAPI "github.com/containerd/containerd/runtime/v2/task"
	"github.com/containerd/typeurl"
)

type guestStats struct {
	CPU           map[string]uint64 `json:"cpu"`
	MemoryCurrent uint64            `json:"memory_current"`
	MemoryStat    map[string]uint64 `json:"memory_stat"`
	PidsCurrent   uint64            `json:"pids_current"`
}

func (s *service) Stats(ctx context.Context, r *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	s.mu.Lock()
	c, ok := s.containers[r.ID]
	var pid uint32
	running := false
	if ok {
		pid = c.init.pid
		running = c.init.status == task.StatusRunning || c.init.status == task.StatusPaused
	}
	vm := s.vm
	s.mu.Unlock()
	if !ok {
		return nil, errdefs.ErrNotFound
	}
	if !running {
		return nil, fmt.Errorf("container is not running: %w", errdefs.ErrFailedPrecondition)
	}
	out, err := s.d.run(vm, []string{guestPod + "/.capsem/" + helperName, "stats", strconv.Itoa(int(pid))})
	if err != nil {
		return nil, err
	}
	var g guestStats
	if err := json.Unmarshal(out, &g); err != nil {
		return nil, err
	}
	m := &v2.Metrics{
		Pids: &v2.PidsStat{Current: g.PidsCurrent},
		CPU: &v2.CPUStat{UsageUsec: g.CPU["usage_usec"], UserUsec: g.CPU["user_usec"],
			SystemUsec: g.CPU["system_usec"]},
		Memory: &v2.MemoryStat{Usage: g.MemoryCurrent, Anon: g.MemoryStat["anon"],
			File: g.MemoryStat["file"]},
	}
	a, err := typeurl.MarshalAny(m)
	if err != nil {
		return nil, err
	}
	return &taskAPI.StatsResponse{Stats: a}, nil
}
