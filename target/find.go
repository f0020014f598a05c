package target

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/ssmproxy/ssmproxy/internal/awserr"
)

// SSMAPI and EC2API are the one call each the finder makes; the SDK's
// clients implement them.
type SSMAPI interface {
	DescribeInstanceInformation(context.Context, *ssm.DescribeInstanceInformationInput, ...func(*ssm.Options)) (*ssm.DescribeInstanceInformationOutput, error)
}

type EC2API interface {
	DescribeInstances(context.Context, *ec2.DescribeInstancesInput, ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
}

// NewFinder builds a Finder on the SDK clients of cfg (endpoint overrides
// such as AWS_ENDPOINT_URL_EC2 reach them through cfg).
func NewFinder(cfg aws.Config) *Finder {
	return &Finder{SSM: ssm.NewFromConfig(cfg), EC2: ec2.NewFromConfig(cfg)}
}

// Finder looks candidates up. Both APIs are paginated to the end, but at
// most MaxPages pages per listing (default DefaultMaxPages).
type Finder struct {
	SSM      SSMAPI
	EC2      EC2API
	MaxPages int
}

// DefaultMaxPages bounds one listing: 20 pages of 50 managed nodes.
const DefaultMaxPages = 20

// ssmPageSize and ec2PageSize are the MaxResults asked for (the APIs'
// maxima are 50 and 1000; a service may still return fewer).
const (
	ssmPageSize = 50
	ec2PageSize = 1000
)

// maxStatusByID is how many candidates get a per-instance status call when
// the batched one is refused (an instance SSM does not know makes
// DescribeInstanceInformation refuse the whole InstanceIds filter).
const maxStatusByID = 10

// Candidate is one instance a query matched.
type Candidate struct {
	ID           string `json:"id"`
	Name         string `json:"name,omitempty"`
	PingStatus   string `json:"ping"` // Online, ConnectionLost, Inactive; NotRegistered when SSM does not know it
	AgentVersion string `json:"agent,omitempty"`
	// Platform is SSM's PlatformType and PlatformName ("Linux Amazon
	// Linux"), when known.
	Platform string `json:"platform,omitempty"`
}

// NotRegistered is the PingStatus of an EC2 instance SSM does not manage.
const NotRegistered = "NotRegistered"

// Find returns every instance q matches, sorted by id. EC2 instances
// (running) come from DescribeInstances; hybrid mi- nodes, which EC2 does
// not know, from DescribeInstanceInformation; the ping status and agent
// version of every candidate from DescribeInstanceInformation.
func (f *Finder) Find(ctx context.Context, q Query) ([]Candidate, error) {
	if q.Kind == KindID {
		return []Candidate{{ID: q.Value}}, nil
	}
	byID := map[string]*Candidate{}
	var ec2IDs []string
	filters := []ec2types.Filter{{Name: aws.String("instance-state-name"), Values: []string{"running"}}}
	switch q.Kind {
	case KindName:
		filters = append(filters, ec2types.Filter{Name: aws.String("tag:Name"), Values: []string{escapeFilter(q.Value)}})
	case KindTag:
		filters = append(filters, ec2types.Filter{Name: aws.String("tag:" + q.Key), Values: []string{escapeFilter(q.Value)}})
	case KindIP:
		filters = append(filters, ec2types.Filter{Name: aws.String("private-ip-address"), Values: []string{q.Value}})
	case KindDNS:
		filters = append(filters, ec2types.Filter{Name: aws.String("private-dns-name"), Values: []string{escapeFilter(q.Value)}})
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
				c := &Candidate{ID: id, PingStatus: NotRegistered}
				for _, t := range in.Tags {
					if aws.ToString(t.Key) == "Name" {
						c.Name = aws.ToString(t.Value)
					}
				}
				byID[id] = c
				ec2IDs = append(ec2IDs, id)
			}
		}
		return out.NextToken, nil
	})
	if err != nil {
		return nil, err
	}
	if err := f.managed(ctx, q, byID); err != nil {
		return nil, err
	}
	if err := f.status(ctx, ec2IDs, byID); err != nil {
		return nil, err
	}
	out := make([]Candidate, 0, len(byID))
	for _, c := range byID {
		out = append(out, *c)
	}
	slices.SortFunc(out, func(a, b Candidate) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// managed adds the hybrid nodes q matches: their Name (or Name tag), their
// address, their host name.
func (f *Finder) managed(ctx context.Context, q Query, byID map[string]*Candidate) error {
	managedOnly := ssmtypes.InstanceInformationStringFilter{Key: aws.String("ResourceType"), Values: []string{"ManagedInstance"}}
	match := func(i ssmtypes.InstanceInformation) bool {
		switch q.Kind {
		case KindName:
			return aws.ToString(i.Name) == q.Value
		case KindIP:
			return aws.ToString(i.IPAddress) == q.Value
		case KindDNS:
			return strings.EqualFold(strings.TrimSuffix(aws.ToString(i.ComputerName), "."), q.Value)
		}
		return true // KindTag: the filter did it
	}
	list := func(filters ...ssmtypes.InstanceInformationStringFilter) error {
		return f.describe(ctx, filters, func(i ssmtypes.InstanceInformation) {
			if id := aws.ToString(i.InstanceId); id != "" && match(i) {
				c := byID[id]
				if c == nil {
					c = &Candidate{ID: id}
					byID[id] = c
				}
				setStatus(c, i)
			}
		})
	}
	switch q.Kind {
	case KindTag:
		return list(managedOnly, ssmtypes.InstanceInformationStringFilter{Key: aws.String("tag:" + q.Key), Values: []string{q.Value}})
	case KindName:
		if err := list(managedOnly); err != nil {
			return err
		}
		// A managed node's Name tag, too: the same filter as a tag query.
		tagged := q
		tagged.Kind, tagged.Key = KindTag, "Name"
		return f.managed(ctx, tagged, byID)
	}
	return list(managedOnly)
}

func setStatus(c *Candidate, i ssmtypes.InstanceInformation) {
	c.PingStatus, c.AgentVersion = string(i.PingStatus), aws.ToString(i.AgentVersion)
	c.Platform = strings.TrimSpace(string(i.PlatformType) + " " + aws.ToString(i.PlatformName))
	if n := aws.ToString(i.Name); n != "" && c.Name == "" {
		c.Name = n
	}
}

// status fills in the ping status and agent version of the EC2 candidates.
func (f *Finder) status(ctx context.Context, ids []string, byID map[string]*Candidate) error {
	for chunk := range slices.Chunk(ids, ssmPageSize) {
		err := f.describe(ctx, []ssmtypes.InstanceInformationStringFilter{{Key: aws.String("InstanceIds"), Values: chunk}},
			func(i ssmtypes.InstanceInformation) {
				if c := byID[aws.ToString(i.InstanceId)]; c != nil {
					setStatus(c, i)
				}
			})
		if awserr.Code(err) != "InvalidInstanceId" {
			if err != nil {
				return err
			}
			continue
		}
		// One of them is not a managed node; ask one by one, for a few.
		for n, id := range chunk {
			if n == maxStatusByID {
				break
			}
			err := f.describe(ctx, []ssmtypes.InstanceInformationStringFilter{{Key: aws.String("InstanceIds"), Values: []string{id}}},
				func(i ssmtypes.InstanceInformation) { setStatus(byID[id], i) })
			if err != nil && awserr.Code(err) != "InvalidInstanceId" {
				return err
			}
		}
	}
	return nil
}

// describe pages through DescribeInstanceInformation with filters.
func (f *Finder) describe(ctx context.Context, filters []ssmtypes.InstanceInformationStringFilter, each func(ssmtypes.InstanceInformation)) error {
	return f.pages("DescribeInstanceInformation", func(token *string) (*string, error) {
		out, err := f.SSM.DescribeInstanceInformation(ctx, &ssm.DescribeInstanceInformationInput{
			Filters: filters, MaxResults: aws.Int32(ssmPageSize), NextToken: token})
		if err != nil {
			return nil, err
		}
		for _, i := range out.InstanceInformationList {
			each(i)
		}
		return out.NextToken, nil
	})
}

// ErrTooManyPages is wrapped when a listing does not end within MaxPages.
var ErrTooManyPages = errors.New("too many pages")

// pages calls page until it returns no token, at most MaxPages times.
func (f *Finder) pages(op string, page func(token *string) (*string, error)) error {
	limit := f.MaxPages
	if limit <= 0 {
		limit = DefaultMaxPages
	}
	var token *string
	for n := 0; n < limit; n++ {
		next, err := page(token)
		if err != nil {
			return &apiError{op: op, err: err}
		}
		if aws.ToString(next) == "" {
			return nil
		}
		token = next
	}
	return fmt.Errorf("%s returned more than %d pages: %w", op, limit, ErrTooManyPages)
}

// apiError is an SDK failure of op, unclassified; Resolve classifies it.
type apiError struct {
	op  string
	err error
}

func (e *apiError) Error() string { return e.op + ": " + e.err.Error() }
func (e *apiError) Unwrap() error { return e.err }
