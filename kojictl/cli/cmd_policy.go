package cli

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
)

func (a *app) policyCommands() []*cobra.Command { return []*cobra.Command{a.checkPolicyCmd()} }

// policyValue reads a key=value value as the policy data Koji would hold:
// numbers, true/false, null/None, else the string.
func policyValue(s string) any {
	switch s {
	case "true", "True":
		return true
	case "false", "False":
		return false
	case "null", "None":
		return nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		return f
	}
	return s
}

func (a *app) checkPolicyCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "check-policy NAME [KEY=VALUE ...]",
		Short: "[admin] Evaluate a policy against data and show what decides (kojibus)",
		Long: `Evaluates the hub's policy NAME against the given data without acting, and prints the
result, the rule that decided and each rule tried. Values are numbers, true/false, null, or strings;
tag, fromtag, build_tag and user may be given by name; the user is you unless given. A policy
whose result is an action (channel, priority, volume) prints the action. Exit 1 when denied.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 {
				return usagef(cmd, "Please specify a policy name")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			data := map[string]any{}
			for _, kv := range args[1:] {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return usagef(cmd, "Invalid data %q: use KEY=VALUE", kv)
				}
				data[k] = policyValue(v)
			}
			c, err := a.session(cmd.Context())
			if err != nil {
				return err
			}
			var res struct {
				Result  string   `json:"result"`
				Allowed bool     `json:"allowed"`
				Action  bool     `json:"action"`
				Reason  string   `json:"reason"`
				Rule    string   `json:"rule"`
				Trace   []string `json:"trace"`
			}
			if err := c.Call(cmd.Context(), "checkPolicy", []any{args[0], data}, map[string]any{"force": force}, &res); err != nil {
				return err
			}
			denied := &exitError{code: exitFail, msg: fmt.Sprintf("policy %s denies", args[0])}
			if a.jsonOut {
				if err := a.printJSON(res); err != nil || res.Allowed {
					return err
				}
				denied.msg = ""
				return denied
			}
			result := res.Result
			if res.Action && result == "" {
				result = "(none)"
			}
			a.printf("Result: %s\n", result)
			if res.Reason != "" {
				a.printf("Reason: %s\n", res.Reason)
			}
			if res.Rule != "" {
				a.printf("Rule: %s\n", res.Rule)
			}
			if len(res.Trace) > 0 && !a.quiet {
				a.println("Rules tried:")
				for _, t := range res.Trace {
					a.println("  " + t)
				}
			}
			if !res.Allowed {
				return denied
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "evaluate as with force (an admin passes a denial)")
	return cmd
}
