package bus

import "time"

// Task states, Koji's numbers (koji.TASK_STATES).
const (
	TaskFree     = 0
	TaskOpen     = 1
	TaskClosed   = 2
	TaskCanceled = 3
	TaskAssigned = 4
	TaskFailed   = 5
)

// TaskStateNames maps a task state to Koji's name.
var TaskStateNames = []string{"FREE", "OPEN", "CLOSED", "CANCELED", "ASSIGNED", "FAILED"}

// TaskStateName returns Koji's name of a task state.
func TaskStateName(state int) string {
	if state >= 0 && state < len(TaskStateNames) {
		return TaskStateNames[state]
	}
	return "UNKNOWN"
}

// TaskStateByName returns the state number of a name (case-insensitive), -1 if unknown.
func TaskStateByName(name string) int {
	for i, n := range TaskStateNames {
		if equalFold(n, name) {
			return i
		}
	}
	return -1
}

// TaskFinished reports whether a state is final.
func TaskFinished(state int) bool {
	return state == TaskClosed || state == TaskCanceled || state == TaskFailed
}

// Task is getTaskInfo's answer, field for field Koji's.
type Task struct {
	ID             int64    `json:"id"`
	State          int      `json:"state"`
	CreateTime     string   `json:"create_time"`
	CreateTS       float64  `json:"create_ts"`
	StartTime      *string  `json:"start_time"`
	StartTS        *float64 `json:"start_ts"`
	CompletionTime *string  `json:"completion_time"`
	CompletionTS   *float64 `json:"completion_ts"`
	ChannelID      int64    `json:"channel_id"`
	HostID         *int64   `json:"host_id"`
	Parent         *int64   `json:"parent"`
	Label          *string  `json:"label"`
	Waiting        *bool    `json:"waiting"`
	Awaited        *bool    `json:"awaited"`
	Owner          int64    `json:"owner"`
	Method         string   `json:"method"`
	Arch           string   `json:"arch"`
	Priority       int      `json:"priority"`
	Weight         float64  `json:"weight"`
}

// KojiTime renders a unix timestamp as Koji's time strings: "2026-11-23 19:32:01.769247+00:00".
func KojiTime(ts float64) string {
	sec := int64(ts)
	nsec := int64((ts - float64(sec)) * 1e9)
	return time.Unix(sec, nsec).UTC().Format("2006-01-02 15:04:05.000000-07:00")
}

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'a' <= x && x <= 'z' {
			x -= 'a' - 'A'
		}
		if 'a' <= y && y <= 'z' {
			y -= 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
