package cli

import (
	"cmp"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/kojibus/kojibus/bus"
)

// downloadChunk is the size asked per downloadTaskOutput call: base64 of it
// stays well inside NATS' default 1 MiB payload.
const downloadChunk = 512 * 1024

func (a *app) downloadTaskOutputCmd() *cobra.Command {
	var outPath string
	cmd := &cobra.Command{
		Use:   "download-task-output [options] <task_id> [<file>]",
		Short: "Download a task's output files (downloadTaskOutput, in chunks)",
		Long: `Download a task's output file in chunks (downloadTaskOutput with offset and
size) to -o FILE (default: the file's base name in the current directory;
"-" writes to stdout). Without a file name, every output file of the task is
downloaded into the current directory (or the directory -o names), as koji's
download-task does.`,
		Args: rangeArgs(1, 2, "Please specify a task ID and at most one file name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			ids, err := parseTaskIDs(cmd, args[:1], "task id must be an integer")
			if err != nil {
				return err
			}
			id := ids[0]
			c, err := a.anon(ctx)
			if err != nil {
				return err
			}
			if len(args) == 2 {
				dest := outPath
				if dest == "" {
					dest = filepath.Base(args[1])
				}
				return a.downloadOutput(ctx, c, id, args[1], dest)
			}
			if outPath == "-" {
				return usagef(cmd, "-o - needs a file name")
			}
			names, _, err := listOutputVolumes(ctx, c, id)
			if err != nil {
				return err
			}
			if len(names) == 0 {
				return failf("task %d has no output files", id)
			}
			dir := cmp.Or(outPath, ".")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return failf("%s", err)
			}
			for _, name := range names {
				if err := a.downloadOutput(ctx, c, id, name, filepath.Join(dir, filepath.Base(name))); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&outPath, "output", "o", "", `write to this file ("-" for stdout), or into this directory without a file name`)
	return cmd
}

// downloadOutput fetches one output file of a task in chunks to dest ("-": stdout).
func (a *app) downloadOutput(ctx context.Context, c *bus.Client, id int64, name, dest string) error {
	var w io.Writer = a.stdout
	var file *os.File
	tmp := ""
	if dest != "-" {
		tmp = dest + ".part"
		var err error
		if file, err = os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644); err != nil {
			return failf("%s", err)
		}
		defer func() {
			if file != nil {
				file.Close()
				os.Remove(tmp)
			}
		}()
		w = file
	}
	var offset int64
	for {
		var b64 string
		if err := c.Call(ctx, "downloadTaskOutput", []any{id, name}, map[string]any{"offset": offset, "size": downloadChunk}, &b64); err != nil {
			return err
		}
		data, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			return fmt.Errorf("downloadTaskOutput: %w", err)
		}
		if _, err := w.Write(data); err != nil {
			return err
		}
		offset += int64(len(data))
		if len(data) < downloadChunk {
			break
		}
	}
	if file == nil {
		return nil
	}
	if err := file.Close(); err != nil {
		return err
	}
	file = nil
	if err := os.Rename(tmp, dest); err != nil {
		os.Remove(tmp)
		return err
	}
	if !a.quiet {
		a.printf("Downloaded %s (%d bytes) to %s\n", name, offset, dest)
	}
	return nil
}
