# Business-hours applies (pre_apply).
#
# Runs that change infrastructure (tracked and destroy) may only apply if they were
# created Monday to Friday, 09:00-17:59 in the team's time zone. The time judged is the
# run's creation time (input.crucible.run.created_at, RFC 3339), not the time of the
# apply: the input has no apply time, and the decision stays reproducible. A run created
# on Friday at 17:30 and confirmed on Saturday is still allowed to apply.
package crucible

import rego.v1

timezone := "Europe/Berlin"

workdays := {"Monday", "Tuesday", "Wednesday", "Thursday", "Friday"}

ns := time.parse_rfc3339_ns(input.crucible.run.created_at)

hour := time.clock([ns, timezone])[0]

day := time.weekday([ns, timezone])

in_business_hours if {
	day in workdays
	hour >= 9
	hour < 18
}

deny contains msg if {
	input.crucible.run.type in {"tracked", "destroy"}
	not in_business_hours
	msg := sprintf("only runs created Monday-Friday 09:00-18:00 %s may apply; this run was created on %s at %02d:00", [timezone, day, hour])
}
