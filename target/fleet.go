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

// Node is one instance of the fleet listing (`ssmproxy ssh-config`,
// docs/ssh-config.md): its id, Name, tags, and what SSM says of its agent.
type Node struct {
	ID           string
	Name         string            // the Name tag, or a managed node's Name
	Tags         map[string]string // EC2 tags; nil for managed (mi-) nodes
	PingStatus   string            // Online, ConnectionLost, Inactive, or NotRegistered
	Platform     string            // SSM's PlatformType (Linux, Windows, MacOS), or EC2's platform details
	AgentVersion string
}

// Tag is one KEY=VALUE a listing must match.
type Tag struct{ Key, Value string }

// Fleet lists every running EC2 instance and every managed node SSM knows,
// sorted by id, with the same two read-only calls as Find (so the lookup
// scope, docs/credentials.md 6.1, covers it). Every tag in tags must match
// (AND); EC2 applies them to instances, SSM's tag: filter to managed nodes.
// EC2 instances SSM does not manage are listed with PingStatus
// NotRegistered: the caller decides what to do with them. Errors are
// classified like a lookup's, as an *Error with an empty Query.
func (f *Finder) Fleet(ctx context.Context, tags []Tag) ([]Node, error) {
	nodes, err := f.fleet(ctx, tags)
	if err != nil {
		return nil, classify(Query{}, err)
	}
	return nodes, nil
}

func (f *Finder) fleet(ctx context.Context, tags []Tag) ([]Node, error) {
	byID := map[string]*Node{}
	filters := []ec2types.Filter{{Name: aws.String("instance-state-name"), Values: []string{"running"}}}
	for _, t := range tags {
		filters = append(filters, ec2types.Filter{Name: aws.String("tag:" + t.Key), Values: []string{escapeFilter(t.Value)}})
	}
	err := f.pages("DescribeInstances", func(token *string) (*string, error) {
		out, err := f.EC2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: filters, MaxResults: aws.Int32(ec2PageSize), NextToken: token})
		if err != nil {
			return nil, err
		}
		for _, r := range out.Reservations {
			for _, in := range r.Instances {
				id := aws.ToString(in.InstanceId)
				if id == "" || byID[id] != nil {
					continue
				}
				n := &Node{ID: id, PingStatus: NotRegistered, Platform: aws.ToString(in.PlatformDetails), Tags: map[string]string{}}
				for _, t := range in.Tags {
					n.Tags[aws.ToString(t.Key)] = aws.ToString(t.Value)
				}
				n.Name = n.Tags["Name"]
				byID[id] = n
			}
		}
		return out.NextToken, nil
	})
	if err != nil {
		return nil, err
	}
	// Managed nodes: all of them, or those with the tags.
	var managed []ssmtypes.InstanceInformationStringFilter
	if len(tags) > 0 {
		managed = append(managed, ssmtypes.InstanceInformationStringFilter{Key: aws.String("ResourceType"), Values: []string{"ManagedInstance"}})
		for _, t := range tags {
			managed = append(managed, ssmtypes.InstanceInformationStringFilter{Key: aws.String("tag:" + t.Key), Values: []string{t.Value}})
		}
		err := f.describe(ctx, managed, func(i ssmtypes.InstanceInformation) {
			if id := aws.ToString(i.InstanceId); id != "" && byID[id] == nil {
				byID[id] = &Node{ID: id}
			}
		})
		if err != nil {
			return nil, err
		}
	}
	// The status of every node: one unfiltered listing, to the end (an
	// InstanceIds filter would fail on the first unmanaged instance).
	err = f.describe(ctx, nil, func(i ssmtypes.InstanceInformation) {
		id := aws.ToString(i.InstanceId)
		n := byID[id]
		if n == nil {
			if len(tags) > 0 || !strings.HasPrefix(id, "mi-") {
				// Filtered out, or an EC2 instance that is not running.
				return
			}
			n = &Node{ID: id}
			byID[id] = n
		}
		n.PingStatus, n.AgentVersion = string(i.PingStatus), aws.ToString(i.AgentVersion)
		if p := string(i.PlatformType); p != "" {
			n.Platform = p
		}
		if n.Name == "" {
			n.Name = aws.ToString(i.Name)
		}
	})
	if err != nil {
		return nil, err
	}
	out := make([]Node, 0, len(byID))
	for _, n := range byID {
		out = append(out, *n)
	}
	slices.SortFunc(out, func(a, b Node) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}
