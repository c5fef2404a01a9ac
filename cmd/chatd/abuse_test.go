package main

import (
	"fmt"
	"slices"
	"sync"
	"testing"
)

// More of issue 13: what concurrent and repeated requests must not do.

// TestConcurrentAdds: adds that race for the last place of a group. The
// projections admit the first member.added in the log and drop the rest
// (domain.Admit), so exactly one add is answered 200 and the others 422
// group_full; with room for all, all are answered 200. Every user an add
// acknowledged is a member afterwards. Before: two concurrent adds to a
// group of 99 both answered 200 while one member was not added.
func TestConcurrentAdds(t *testing.T) {
	t.Parallel()
	const limit, racers, rounds = 4, 6, 3
	eachBackend(t, func(t *testing.T, b backend) {
		n := startNode(t, b, "--max-group-size", fmt.Sprint(limit))
		ann := n.signUp("ann")
		tok := n.login(ann, "phone")
		var first []string // the group's members besides ann, but the last place
		for i := range limit - 2 {
			first = append(first, n.signUpQuick(fmt.Sprint("m", i)))
		}
		var racer []string
		for i := range racers {
			racer = append(racer, n.signUpQuick(fmt.Sprint("r", i)))
		}
		// add adds each of users to g at once and returns the answers.
		add := func(g string, users []string) []apiError {
			answers := make([]apiError, len(users))
			members := make([][]string, len(users))
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i, u := range users {
				wg.Go(func() {
					<-start
					var c channelJSON
					answers[i] = n.do("POST", "/v1/channels/"+g+"/members", tok, map[string]string{"user_id": u}, &c)
					members[i] = c.Members
				})
			}
			close(start)
			wg.Wait()
			for i, a := range answers {
				if a.Code == "" && !slices.Contains(members[i], users[i]) {
					t.Fatalf("the add of %s answered %d with members %v, without it", users[i], a.Status, members[i])
				}
			}
			return answers
		}
		members := func(g string) []string {
			var c channelJSON
			n.must("GET", "/v1/channels/"+g, tok, nil, &c)
			return c.Members
		}

		for round := range rounds {
			g := n.createChannel(tok, "group", first...)
			answers := add(g.ChannelID, racer)
			var won []string
			for i, a := range answers {
				switch {
				case a.Code == "":
					won = append(won, racer[i])
				case a.Status != 422 || a.Code != "group_full":
					t.Fatalf("round %d: the add of %s: %+v, want 200 or 422 group_full", round, racer[i], a)
				}
			}
			if len(won) != 1 {
				t.Fatalf("round %d: %d adds for the last place answered 200 (%v), want exactly 1", round, len(won), won)
			}
			got, want := members(g.ChannelID), sorted(append(slices.Clone(first), ann.ID, won[0])...)
			if !slices.Equal(got, want) {
				t.Fatalf("round %d: members %v, want %v (%s won the last place)", round, got, want, won[0])
			}
		}

		// Both members open their direct channel at once: one creates it
		// (201), the other finds it (200).
		for round := range rounds {
			cat, dan := n.signUp(fmt.Sprint("cat", round)), n.signUp(fmt.Sprint("dan", round))
			toks := []string{n.login(cat, "phone"), n.login(dan, "phone")}
			others := []string{dan.ID, cat.ID}
			statuses := make([]int, 2)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range 2 {
				wg.Go(func() {
					<-start
					statuses[i] = n.do("POST", "/v1/channels", toks[i], map[string]any{"kind": "direct", "members": []string{others[i]}}, nil).Status
				})
			}
			close(start)
			wg.Wait()
			if slices.Sort(statuses); !slices.Equal(statuses, []int{200, 201}) {
				t.Fatalf("round %d: two opens of one direct channel answered %v, want one 201 and one 200", round, statuses)
			}
		}

		// Room for both: both are added.
		g := n.createChannel(tok, "group")
		for i, a := range add(g.ChannelID, racer[:limit-1]) {
			if a.Code != "" {
				t.Fatalf("the add of %s with room for it: %+v", racer[i], a)
			}
		}
		if got, want := members(g.ChannelID), sorted(append(slices.Clone(racer[:limit-1]), ann.ID)...); !slices.Equal(got, want) {
			t.Fatalf("members %v, want %v", got, want)
		}
	})
}
