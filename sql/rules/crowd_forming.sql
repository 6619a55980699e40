-- crowd_forming: a zone whose density jumps between two consecutive windows (by 0.3 persons/m²
-- or more) and reaches Fruin level D (0.72 persons/m²) or worse. The early warning before a
-- density alert: at a stadium gate the crowd builds within a minute. Tune the jump and the
-- level for each site; a slower build is caught by the density alert itself.
CREATE RULE crowd_forming WITH (severity = 'high') AS
SELECT b.zone_id, b.zone, a.density AS density_before, b.density AS density_now, b.level, b.window_end
FROM zone_density a
JOIN zone_density b
  ON a.zone_id = b.zone_id
 AND b.window_start = a.window_end
 AND b.event_time BETWEEN a.event_time AND a.event_time + INTERVAL '1 minute'
WHERE b.density >= a.density + 0.3
  AND b.density >= 0.72
