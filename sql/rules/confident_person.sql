-- confident_person: people the detector is very sure of. The example rule of the README, and a
-- starting point: narrow it with a zone (`AND zone_id = 3`) or a camera to make it useful.
SELECT camera_id, event_time, score
FROM detections
WHERE class = 'person' AND score > 0.9
