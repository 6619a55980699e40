-- camera_silent: a camera that has sent no detection for 30 seconds (a session window per
-- camera closes when the watermark passes its last event plus the gap). `last_seen` is the
-- time of its last detection. Sessions also close when the engine stops, so a row at shutdown
-- with `last_seen` within 30 s of the end is not an outage.
CREATE RULE camera_silent WITH (severity = 'high') AS
SELECT camera_id, window_end - INTERVAL '30 seconds' AS last_seen, count(*) AS detections_before
FROM detections
GROUP BY session(event_time, INTERVAL '30 seconds'), camera_id
