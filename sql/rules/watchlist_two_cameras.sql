-- watchlist_two_cameras: a watchlisted plate read by two different cameras within 10 minutes,
-- with the entry's legal basis. Two sightings give a direction of travel; like every
-- watchlist hit, it is a lead for an officer to verify against the image, not a finding.
CREATE RULE watchlist_two_cameras WITH (severity = 'high') AS
SELECT a.plate, w.legal_basis,
       a.camera_id AS first_camera, a.event_time AS first_seen,
       b.camera_id AS second_camera, b.event_time AS then_seen
FROM plate_reads a
JOIN plate_reads b
  ON a.plate = b.plate
 AND a.camera_id <> b.camera_id
 AND b.event_time > a.event_time
 AND b.event_time <= a.event_time + INTERVAL '10 minutes'
JOIN watchlist w ON a.plate = w.plate
