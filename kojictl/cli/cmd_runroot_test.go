package cli

import (
	"testing"
)

// runroot's refusals before anything runs; the command's runs themselves
// are in the integration tests (a real builderd and buildroot).
func TestRunrootRefusals(t *testing.T) {
	h := startHub(t) // without the runroot plugin
	p := h.ProfilePath()
	runSteps(t, p, []step{
		{name: "too few arguments", args: []string{"runroot", "f40-build", "x86_64"}, code: 2, errText: "Incorrect number of arguments"},
		{name: "both chroot kinds", args: []string{"runroot", "--new-chroot", "--old-chroot", "t", "x86_64", "true"}, code: 2,
			errText: "--new-chroot and --old-chroot are mutually exclusive"},
		{name: "options after the tag are the command's", args: []string{"runroot", "t", "x86_64", "ls", "--bogus"}, code: 1,
			out:     []string{"* The runroot plugin appears to not be installed on the koji hub.  Please contact the administrator.\n"},
			errText: "Invalid method: runroot"},
		{name: "bad weight", args: []string{"runroot", "-w", "heavy", "t", "x86_64", "true"}, code: 2, errText: "kojictl: error: option --weight: invalid integer value: 'heavy'"},
	})
	runSteps(t, p, []step{{name: "no task made", args: []string{"list-tasks"}, exact: ptr("(no tasks)\n")}})
}
