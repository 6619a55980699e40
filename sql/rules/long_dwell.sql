-- long_dwell: a person who stayed in a zone longer than 20 s (one row when they leave it). On the
-- simulated city this finds the people the gate-A surge holds in its plaza; on a site, use the
-- dwell that matters there (minutes in a fan zone, seconds at an emergency exit). Visits are per
-- camera track: a zone seen by several cameras reports a visit per camera, so filter on one
-- `camera_id` to count people.
SELECT camera_id, event_time, zone_id, zone, track_id, entered_at, left_at, dwell_s
FROM zone_visits
WHERE class = 'person' AND dwell_s > 20
