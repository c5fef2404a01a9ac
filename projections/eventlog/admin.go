package eventlog

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// DeleteGroup removes a role's consumer group with its committed offsets,
// so the role starts again from the beginning of its topics. Static
// members (which do not leave when they stop) are removed first; a member
// that is still running keeps the group alive and is an error.
func DeleteGroup(ctx context.Context, cfg Config, role string) error {
	cl, err := kgo.NewClient(cfg.ClientOpts()...)
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	group := cfg.Group(role)
	described, err := adm.DescribeGroups(ctx, group)
	if err != nil {
		return fmt.Errorf("eventlog: describe group %s: %w", group, err)
	}
	var ids []string
	for _, g := range described {
		for _, m := range g.Members {
			if m.InstanceID != nil {
				ids = append(ids, *m.InstanceID)
			}
		}
	}
	if len(ids) > 0 {
		resp, err := adm.LeaveGroup(ctx, kadm.LeaveGroup(group).InstanceIDs(ids...).Reason("reset"))
		if err == nil {
			err = resp.Error()
		}
		if err != nil {
			return fmt.Errorf("eventlog: remove the members of %s: %w", group, err)
		}
	}
	resp, err := adm.DeleteGroups(ctx, group)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		return fmt.Errorf("eventlog: delete group %s: %w", group, err)
	}
	return nil
}
