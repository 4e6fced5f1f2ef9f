package hub

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/hubd/internal/registry"
	"github.com/kojibus/kojibus/hubd/internal/state"
)

// Task output. Builders publish each file in chunks to
// bus.UploadSubject(<task>, <attempt>, <name>), which is the chunk subject
// of the Object Store bus.TaskOutputStore: watch-logs -f follows it live.
// When the hub accepts the run's close or fail, the builder's list of the
// files it uploaded in full (size, chunks, digest) becomes one meta message
// per file, making it the object <task>/<attempt>/<name>: nothing is read or
// copied. A stale attempt's files get no meta and are never listed; their
// chunks are purged when a later attempt's result is accepted.

type outputFile struct {
	Name  string  `json:"name"`
	Size  int64   `json:"size"`
	MTime float64 `json:"mtime"`
}

func init() { domainRegistrars = append(domainRegistrars, (*Server).registerOutputs) }

func outputObject(taskID, attempt int64, name string) string {
	return strconv.FormatInt(taskID, 10) + "/" + strconv.FormatInt(attempt, 10) + "/" + name
}

// uploadsStream and outputStore return handles looked up once (each lookup
// is a round trip to the server).
func (s *Server) uploadsStream(ctx context.Context) (jetstream.Stream, error) {
	s.handlesMu.Lock()
	defer s.handlesMu.Unlock()
	if s.uploads == nil {
		st, err := s.js.Stream(ctx, bus.UploadsStream)
		if err != nil {
			return nil, err
		}
		s.uploads = st
	}
	return s.uploads, nil
}

func (s *Server) outputStore(ctx context.Context) (jetstream.ObjectStore, error) {
	s.handlesMu.Lock()
	defer s.handlesMu.Unlock()
	if s.outputs == nil {
		st, err := s.js.ObjectStore(ctx, bus.TaskOutputStore)
		if err != nil {
			return nil, err
		}
		s.outputs = st
	}
	return s.outputs, nil
}

// liveUploads returns the file names uploaded so far by an attempt on its host.
func (s *Server) liveUploads(ctx context.Context, hostID, taskID, attempt int64) (map[string]string, error) {
	stream, err := s.uploadsStream(ctx)
	if err != nil {
		return nil, err
	}
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(bus.UploadFilter(hostID, taskID, attempt)))
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	prefix := strings.TrimSuffix(bus.UploadFilter(hostID, taskID, attempt), ">")
	for subj := range info.State.Subjects {
		if name, ok := bus.UnescapeToken(strings.TrimPrefix(subj, prefix)); ok && bus.ValidOutputName(name) {
			out[name] = subj
		}
	}
	return out, nil
}

// readUpload streams one uploaded file's chunks in order into w. It reads
// them by sequence ("next message for this subject") rather than through a
// consumer, so reading outputs leaves no consumers behind on the stream.
func (s *Server) readUpload(ctx context.Context, subject string, w io.Writer) (int64, error) {
	stream, err := s.uploadsStream(ctx)
	if err != nil {
		return 0, err
	}
	var n int64
	for seq := uint64(1); ; {
		m, err := stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		k, err := w.Write(m.Data)
		n += int64(k)
		if err != nil {
			return n, err
		}
		if m.Header.Get(bus.HeaderUploadFinal) != "" {
			return n, nil
		}
		seq = m.Sequence + 1
	}
}

// checkUploadedFiles checks the files a builder reports before anything is written.
func checkUploadedFiles(files []bus.UploadedFile) error {
	seen := make(map[string]bool, len(files))
	for _, f := range files {
		if err := f.Check(); err != nil {
			return err
		}
		if seen[f.Name] {
			return bus.ParameterError("output %s listed twice", f.Name)
		}
		seen[f.Name] = true
	}
	return nil
}

// recordOutputs writes the meta of each file an attempt uploaded, which
// makes its chunks the object <task>/<attempt>/<name> of the output store.
func (s *Server) recordOutputs(ctx context.Context, hostID, taskID, attempt int64, files []bus.UploadedFile) ([]outputFile, error) {
	if len(files) == 0 {
		return nil, nil
	}
	now := float64(time.Now().UnixMicro()) / 1e6
	acks := make([]jetstream.PubAckFuture, 0, len(files))
	out := make([]outputFile, 0, len(files))
	for _, f := range files {
		info := jetstream.ObjectInfo{
			ObjectMeta: jetstream.ObjectMeta{Name: outputObject(taskID, attempt, f.Name)},
			Bucket:     bus.TaskOutputStore, NUID: bus.UploadToken(hostID, taskID, attempt, f.Name),
			Size: uint64(f.Size), Chunks: uint32(f.Chunks), Digest: f.Digest,
		}
		m := nats.NewMsg(outputMetaSubject(info.Name))
		m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
		var err error
		if m.Data, err = json.Marshal(info); err != nil {
			return nil, fmt.Errorf("task %d output %s: %w", taskID, f.Name, err)
		}
		ack, err := s.js.PublishMsgAsync(m)
		if err != nil {
			return nil, fmt.Errorf("task %d output %s: %w", taskID, f.Name, err)
		}
		acks = append(acks, ack)
		out = append(out, outputFile{Name: f.Name, Size: f.Size, MTime: now})
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for i, ack := range acks {
		select {
		case <-ack.Ok():
		case err := <-ack.Err():
			return nil, fmt.Errorf("task %d output %s: %w", taskID, files[i].Name, err)
		case <-wctx.Done():
			return nil, fmt.Errorf("task %d output %s: %w", taskID, files[i].Name, wctx.Err())
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// outputMetaSubject is the Object Store's meta subject of an object.
func outputMetaSubject(object string) string {
	return "$O." + bus.TaskOutputStore + ".M." + base64.URLEncoding.EncodeToString([]byte(object))
}

// purgeStaleUploads removes the chunks of the attempts before the accepted
// one, which will never be listed. A failure is logged: the chunks only
// take room.
func (s *Server) purgeStaleUploads(ctx context.Context, taskID, accepted int64) {
	if accepted <= 1 {
		return
	}
	stream, err := s.uploadsStream(ctx)
	for a := int64(1); err == nil && a < accepted; a++ {
		err = stream.Purge(ctx, jetstream.WithPurgeSubject(bus.UploadFilter(0, taskID, a)))
	}
	if err != nil {
		s.log.Warn("purge uploads of stale attempts", "task", taskID, "err", err)
	}
}

func (s *Server) registerOutputs() {
	s.reg.Register(
		registry.Method{
			Name: "listTaskOutput", Doc: "List the files a task produced",
			Params:  []registry.Param{registry.P("taskID"), registry.Opt("stat", false), registry.Opt("all_volumes", false), registry.Opt("strict", false)},
			Handler: s.listTaskOutput,
		},
		registry.Method{
			Name: "downloadTaskOutput", Doc: "Download a part of a task output file, base64 encoded",
			Params: []registry.Param{registry.P("taskID"), registry.P("fileName"), registry.Opt("offset", 0), registry.Opt("size", -1),
				registry.Opt("volume", nil)},
			Handler: s.downloadTaskOutput,
		},
	)
}

// taskFiles returns a task's files: the accepted run's, or the live ones of a running task.
func (s *Server) taskFiles(ctx context.Context, t *taskRecord) ([]outputFile, map[string]string, error) {
	if t.OutputAttempt > 0 || bus.TaskFinished(t.State) {
		return t.Outputs, nil, nil
	}
	if t.HostID == nil {
		return nil, nil, nil // not taken: nothing uploaded yet
	}
	live, err := s.liveUploads(ctx, *t.HostID, t.ID, t.Attempt)
	if err != nil {
		return nil, nil, err
	}
	var files []outputFile
	for name := range live {
		files = append(files, outputFile{Name: name})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Name < files[j].Name })
	return files, live, nil
}

func (s *Server) listTaskOutput(ctx context.Context, c *registry.Call) (any, error) {
	id, err := c.Int("taskID")
	if err != nil {
		return nil, err
	}
	stat, err := c.Bool("stat")
	if err != nil {
		return nil, err
	}
	allVolumes, err := c.Bool("all_volumes")
	if err != nil {
		return nil, err
	}
	strict, err := c.Bool("strict")
	if err != nil {
		return nil, err
	}
	var t *taskRecord
	_ = s.store.Read(func(v state.View) error { t, _ = lookupTask(v, id); return nil })
	if t == nil {
		if strict {
			return nil, bus.GenericError("No such task: %d", id)
		}
		if allVolumes || stat {
			return map[string]any{}, nil
		}
		return []string{}, nil
	}
	files, _, err := s.taskFiles(ctx, t)
	if err != nil {
		return nil, err
	}
	statOf := func(f outputFile) map[string]any {
		ts := strconv.FormatFloat(f.MTime, 'f', -1, 64)
		return map[string]any{"st_size": strconv.FormatInt(f.Size, 10), "st_atime": ts, "st_mtime": ts, "st_ctime": ts}
	}
	switch {
	case allVolumes && stat:
		out := map[string]any{}
		for _, f := range files {
			out[f.Name] = map[string]any{"DEFAULT": statOf(f)}
		}
		return out, nil
	case allVolumes:
		out := map[string]any{}
		for _, f := range files {
			out[f.Name] = []string{"DEFAULT"}
		}
		return out, nil
	case stat:
		out := map[string]any{}
		for _, f := range files {
			out[f.Name] = statOf(f)
		}
		return out, nil
	}
	names := []string{}
	for _, f := range files {
		names = append(names, f.Name)
	}
	return names, nil
}

func (s *Server) downloadTaskOutput(ctx context.Context, c *registry.Call) (any, error) {
	id, err := c.Int("taskID")
	if err != nil {
		return nil, err
	}
	name, err := c.String("fileName")
	if err != nil {
		return nil, err
	}
	offset, err := c.Int("offset")
	if err != nil {
		return nil, err
	}
	size, err := c.Int("size")
	if err != nil {
		return nil, err
	}
	if strings.Contains(name, "..") {
		return nil, bus.GenericError("Invalid file name: %s", name)
	}
	var t *taskRecord
	_ = s.store.Read(func(v state.View) error { t, _ = lookupTask(v, id); return nil })
	if t == nil {
		return nil, bus.GenericError("No such task: %d", id)
	}
	files, live, err := s.taskFiles(ctx, t)
	if err != nil {
		return nil, err
	}
	found := false
	for _, f := range files {
		found = found || f.Name == name
	}
	if !found {
		return nil, bus.GenericError("no file \"%s\" output by task %d", name, id)
	}
	var buf bytes.Buffer
	if live != nil {
		if _, err := s.readUpload(ctx, live[name], &buf); err != nil {
			return nil, err
		}
	} else {
		store, err := s.outputStore(ctx)
		if err != nil {
			return nil, err
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		defer cancel()
		data, err := store.GetBytes(rctx, outputObject(t.ID, t.OutputAttempt, name))
		if err != nil {
			return nil, fmt.Errorf("task %d output %s: %w", id, name, err)
		}
		buf.Write(data)
	}
	data := buf.Bytes()
	if offset < 0 {
		offset += int64(len(data)) // negative offsets seek from the end, as Koji
		if offset < 0 {
			offset = 0
		}
	}
	if offset > int64(len(data)) {
		offset = int64(len(data))
	}
	data = data[offset:]
	if size >= 0 && size < int64(len(data)) {
		data = data[:size]
	}
	return base64.StdEncoding.EncodeToString(data), nil
}
