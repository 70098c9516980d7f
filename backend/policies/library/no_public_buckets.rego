# No public buckets (post_plan).
#
# Denies S3 buckets (and bucket ACLs) with a public canned ACL, and public access
# blocks that switch any of the four protections off.
package crucible

import rego.v1

public_acls := {"public-read", "public-read-write", "authenticated-read"}

protections := ["block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"]

planned contains rc if {
	some rc in input.resource_changes
	some action in rc.change.actions
	action in {"create", "update"}
}

deny contains msg if {
	some rc in planned
	rc.type in {"aws_s3_bucket", "aws_s3_bucket_acl"}
	acl := object.get(rc.change.after, "acl", "private")
	acl in public_acls
	msg := sprintf("%s would make a bucket public (acl %s)", [rc.address, acl])
}

deny contains msg if {
	some rc in planned
	rc.type == "aws_s3_bucket_public_access_block"
	off := [p | some p in protections; object.get(rc.change.after, p, false) != true]
	count(off) > 0
	msg := sprintf("%s leaves public access open: %s must be true", [rc.address, concat(", ", off)])
}
