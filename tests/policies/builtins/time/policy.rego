package crucible

import rego.v1

ns := time.parse_rfc3339_ns(input.crucible.run.created_at)

warn contains sprintf("clock in Berlin %v, weekday %s, date %v", [time.clock([ns, "Europe/Berlin"]), time.weekday(ns), time.date(ns)])

warn contains sprintf("a day later is %s", [time.weekday(time.add_date(ns, 0, 0, 1))])

warn contains sprintf("%d minutes", [time.parse_duration_ns("1h30m") / 60000000000])

warn contains sprintf("diff %v", [time.diff(time.add_date(ns, 0, 0, 2), ns)])

warn contains sprintf("fraction and offset agree: %v", [time.parse_rfc3339_ns("2026-03-06T18:30:00.000+01:00") == ns])
