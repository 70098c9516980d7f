# Required tags (post_plan).
#
# Every AWS resource that is created or updated and supports tags must carry the
# tags in `required_tags`, with non-empty values.
package crucible

import rego.v1

required_tags := {"owner", "cost-center", "environment"}

# Resource types that take tags and are checked. Extend to your providers.
taggable(type) if startswith(type, "aws_")

taggable(type) if startswith(type, "azurerm_")

exempt := {"aws_iam_role_policy_attachment", "aws_s3_bucket_acl", "aws_s3_bucket_public_access_block", "aws_route"}

deny contains msg if {
	some rc in input.resource_changes
	rc.mode == "managed"
	some action in rc.change.actions
	action in {"create", "update"}
	taggable(rc.type)
	not rc.type in exempt
	is_object(rc.change.after)
	tags := object.get(rc.change.after, "tags", {})
	present := {k | v := tags[k]; trim_space(v) != ""}
	missing := required_tags - present
	count(missing) > 0
	msg := sprintf("%s is missing required tags: %s", [rc.address, concat(", ", sort(missing))])
}
