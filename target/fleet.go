package target

import (
	"context"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
)

// Node is one managed node of the fleet, for ssmproxy ssh-config
// (docs/ssh-config.md).
type Node struct {
	ID         string
	Name       string            // the Name tag, or a hybrid node's name
	Tags       map[string]string // EC2 tags (none for hybrid nodes)
	PingStatus string
	Platform   string
}

// FleetMaxPages bounds a fleet listing: 200 pages of 50 managed nodes.
const FleetMaxPages = 200

// Fleet lists every node Session Manager can reach: each managed node
// DescribeInstanceInformation returns, with the Name and tags
// DescribeInstances gives its EC2 instance. With tags (KEY=VALUE, all must
// hold), only running EC2 instances that carry them; hybrid nodes have no
// EC2 tags and are then left out. Sorted by id. Errors are classified as
// Resolve's are.
func (f *Finder) Fleet(ctx context.Context, tags map[string]string) ([]Node, error) {
	g := *f
	if g.MaxPages <= 0 {
		g.MaxPages = FleetMaxPages
	}
	q := Query{Kind: KindTag, Raw: "(the fleet)"}
	managed := map[string]*Node{}
	err := g.describe(ctx, nil, func(i ssmtypes.InstanceInformation) {
		id := aws.ToString(i.InstanceId)
		if !IsID(id) {
			return
		}
		managed[id] = &Node{ID: id, Name: aws.ToString(i.Name), PingStatus: string(i.PingStatus),
			Platform: strings.TrimSpace(string(i.PlatformType) + " " + aws.ToString(i.PlatformName))}
	})
	if err != nil {
		return nil, classify(q, err)
	}
	filters := []ec2types.Filter{{Name: aws.String("instance-state-name"), Values: []string{"running"}}}
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		filters = append(filters, ec2types.Filter{Name: aws.String("tag:" + k), Values: []string{escapeFilter(tags[k])}})
	}
	inEC2 := map[string]bool{}
	err = g.pages("DescribeInstances", func(token *string) (*string, error) {
		out, err := g.EC2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: filters, MaxResults: aws.Int32(ec2PageSize), NextToken: token})
		if err != nil {
			return nil, err
		}
		for _, r := range out.Reservations {
			for _, in := range r.Instances {
				n := managed[aws.ToString(in.InstanceId)]
				if n == nil {
					continue // not managed: Session Manager cannot reach it
				}
				inEC2[n.ID] = true
				n.Tags = map[string]string{}
				n.Name = ""
				for _, t := range in.Tags {
					n.Tags[aws.ToString(t.Key)] = aws.ToString(t.Value)
					if aws.ToString(t.Key) == "Name" {
						n.Name = aws.ToString(t.Value)
					}
				}
			}
		}
		return out.NextToken, nil
	})
	if err != nil {
		return nil, classify(q, err)
	}
	out := make([]Node, 0, len(managed))
	for id, n := range managed {
		// With tag filters only the EC2 instances that matched; without,
		// every managed node (a stopped instance's agent is not Online but
		// it is still the user's host).
		if len(tags) > 0 && !inEC2[id] {
			continue
		}
		out = append(out, *n)
	}
	slices.SortFunc(out, func(a, b Node) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}
