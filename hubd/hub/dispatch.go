package hub

import (
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strconv"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/hubd/internal/state"
)

// Dispatch: how a task reaches a builder.
//
// A FREE task is published to its queue subject
//
//	koji.tasks.<channel id>.<arch>.p<priority+1000>
//
// whose durable pull consumer q-<channel id>-<arch>-<priority+1000> every
// builder of that channel and arch may pull from; a task pinned to a host
// (ASSIGNED) goes to koji.tasks.host.<host id>, consumer host-<host id>.
// One consumer per priority lets builders take the most urgent task first:
// they try their queues in priority order. The message is staged in the same
// transaction as the state change and published by the relay, so a task
// never exists without its queue message or the other way round.
//
//	taskqueue.<consumer>   queueRecord: a queue builders may pull from
//
// Every dispatch carries the task's attempt number. A builder claims the task
// with host.openTask(id, attempt), a compare-and-set on the task record; a
// message of an older attempt (a redelivery, a duplicate, a freed run) is
// refused there, which is what makes JetStream's acceptance of late acks
// (nats-server#6937) harmless.

const priorityOffset = 1000

var archTokenRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,16}$`)

type queueRecord struct {
	Consumer  string `json:"consumer"`
	Subject   string `json:"subject"`
	Notify    string `json:"notify"`
	Priority  int    `json:"priority"`
	ChannelID int64  `json:"channel_id,omitempty"`
	Channel   string `json:"channel,omitempty"`
	Arch      string `json:"arch,omitempty"`
	HostID    int64  `json:"host_id,omitempty"`
}

func queueKey(consumer string) string { return "taskqueue." + consumer }

// pinnedQueue is a host's own queue, of the tasks assigned to it.
func pinnedQueue(hostID int64) queueRecord {
	id := strconv.FormatInt(hostID, 10)
	return queueRecord{
		Consumer: "host-" + id, Subject: bus.TaskPrefix + "host." + id,
		Notify: bus.NotifyPrefix + "tasks.host." + id, Priority: -1 << 30, HostID: hostID,
	}
}

// taskQueue names the queue a task is dispatched to in its current state.
func taskQueue(v state.View, t *taskRecord) queueRecord {
	if t.State == bus.TaskAssigned && t.HostID != nil {
		return pinnedQueue(*t.HostID)
	}
	p := strconv.Itoa(t.Priority + priorityOffset)
	ch := strconv.FormatInt(t.ChannelID, 10)
	var channel bus.Channel
	_, _ = v.GetJSON(channelKey(t.ChannelID), &channel)
	return queueRecord{
		Consumer: "q-" + ch + "-" + t.Arch + "-" + p, Subject: bus.TaskPrefix + ch + "." + t.Arch + ".p" + p,
		Notify:   bus.NotifyPrefix + "tasks." + ch + "." + t.Arch,
		Priority: t.Priority, ChannelID: t.ChannelID, Channel: channel.Name, Arch: t.Arch,
	}
}

// dispatchTaskTx stages the queue message of a FREE or ASSIGNED task under a
// new attempt number.
func dispatchTaskTx(tx *state.Txn, t *taskRecord) error {
	if t.State != bus.TaskFree && t.State != bus.TaskAssigned {
		return fmt.Errorf("dispatch: task %d is %s", t.ID, bus.TaskStateName(t.State))
	}
	if !archTokenRE.MatchString(t.Arch) {
		return bus.GenericError("Invalid arch: %q", t.Arch)
	}
	t.Attempt++
	if err := tx.Put(taskKey(t.ID), t); err != nil {
		return err
	}
	q := taskQueue(tx.View, t)
	if _, _, ok := tx.Get(queueKey(q.Consumer)); !ok {
		if err := tx.Put(queueKey(q.Consumer), q); err != nil {
			return err
		}
	}
	id := strconv.FormatInt(t.ID, 10)
	attempt := strconv.FormatInt(t.Attempt, 10)
	body, err := json.Marshal(bus.TaskDispatch{
		TaskID: t.ID, Attempt: t.Attempt, Method: t.Method, Arch: t.Arch,
		ChannelID: t.ChannelID, Priority: t.Priority, Weight: t.Weight, Consumer: q.Consumer,
	})
	if err != nil {
		return err
	}
	tx.Dispatch(state.OutEvent{
		Subject: q.Subject,
		MsgID:   "task-" + id + "-" + attempt,
		Headers: map[string]string{
			bus.HeaderTaskID: id, bus.HeaderTaskAttempt: attempt, bus.HeaderTaskMethod: t.Method,
			bus.HeaderTaskWeight: strconv.FormatFloat(t.Weight, 'f', -1, 64),
		},
		Body:     body,
		Notify:   q.Notify,
		Consumer: &state.ConsumerSpec{Stream: bus.TasksStream, Name: q.Consumer, Filter: q.Subject},
	})
	return nil
}

// hostQueues lists the queues a host may pull from: its pinned queue first,
// then every queue of its enabled channels and its arches (plus noarch), by priority.
func hostQueues(v state.View, h *hostRecord) []queueRecord {
	out := []queueRecord{pinnedQueue(h.ID)}
	arches := map[string]bool{"noarch": true}
	for _, a := range splitArches(h.Arches) {
		arches[a] = true
	}
	chans := map[int64]bool{}
	for _, cid := range hostChannelIDs(v, h.ID) {
		var ch bus.Channel
		if ok, _ := v.GetJSON(channelKey(cid), &ch); ok && ch.Enabled {
			chans[cid] = true
		}
	}
	var qs []queueRecord
	for _, k := range v.Keys("taskqueue", "taskqueue.q-") {
		var q queueRecord
		if ok, _ := v.GetJSON(k, &q); ok && chans[q.ChannelID] && arches[q.Arch] {
			qs = append(qs, q)
		}
	}
	sort.Slice(qs, func(i, j int) bool {
		if qs[i].Priority != qs[j].Priority {
			return qs[i].Priority < qs[j].Priority
		}
		return qs[i].Consumer < qs[j].Consumer
	})
	return append(out, qs...)
}

func splitArches(s string) []string {
	var out []string
	start := -1
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ' ' || s[i] == '\t' || s[i] == ',' {
			if start >= 0 {
				out = append(out, s[start:i])
				start = -1
			}
		} else if start < 0 {
			start = i
		}
	}
	return out
}
