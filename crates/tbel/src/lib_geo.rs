//! ThingsBoard's geofencing helpers `isInsidePolygon` and `isInsideCircle`.
//!
//! The perimeter is the JSON string ThingsBoard stores: for a polygon an array of
//! `[latitude, longitude]` pairs (two pairs are the opposite corners of a rectangle), or an
//! array of such arrays (several polygons; a polygon lying inside another one is a hole);
//! for a circle an object `{"latitude", "longitude", "radius", "radiusUnit"}` with the unit
//! one of METER (default), KILOMETER, FOOT, MILE, NAUTICAL_MILE. A point on the polygon's
//! edge is outside; a circle's point counts when its distance is below the radius.

use serde_json::Value as J;

use crate::error::{Result, TbelError};

type Ring = Vec<(f64, f64)>;

fn err(msg: impl Into<String>) -> TbelError {
    TbelError::runtime(msg)
}

fn num(v: &J) -> Result<f64> {
    match v {
        J::Number(n) => n.as_f64().ok_or_else(|| err("not a number")),
        J::String(s) => s
            .trim()
            .parse()
            .map_err(|_| err(format!("For input string: \"{s}\""))),
        v => Err(err(format!("Expected a number, got {v}"))),
    }
}

fn is_pair_list(a: &[J]) -> bool {
    a.iter().all(|e| match e {
        J::Array(p) => p.first().is_some_and(|x| !x.is_array() && !x.is_object()),
        _ => false,
    })
}

fn collect_rings(a: &[J], out: &mut Vec<Ring>) -> Result<()> {
    if is_pair_list(a) {
        let mut ring = Vec::with_capacity(a.len() + 1);
        for p in a {
            let p = p.as_array().unwrap();
            if p.len() < 2 {
                return Err(err("Index 1 out of bounds for length 1"));
            }
            ring.push((num(&p[0])?, num(&p[1])?));
        }
        if ring.len() == 2 {
            let ((ax, ay), (cx, cy)) = (ring[0], ring[1]);
            ring = vec![(ax, ay), (ax, cy), (cx, cy), (cx, ay)];
        }
        out.push(ring);
        return Ok(());
    }
    for e in a {
        match e {
            J::Array(inner) if is_pair_list(inner) => collect_rings(inner, out)?,
            J::Array(inner) => collect_rings(inner, out)?,
            _ => return Err(err("Not a JSON Array")),
        }
    }
    Ok(())
}

/// -1 outside, 0 on the boundary, 1 inside.
fn locate(ring: &Ring, x: f64, y: f64) -> i32 {
    let n = ring.len();
    if n < 3 {
        return -1;
    }
    let mut inside = false;
    for i in 0..n {
        let (x1, y1) = ring[i];
        let (x2, y2) = ring[(i + 1) % n];
        // on the segment?
        let cross = (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1);
        if cross == 0.0 && x >= x1.min(x2) && x <= x1.max(x2) && y >= y1.min(y2) && y <= y1.max(y2)
        {
            return 0;
        }
        if (y1 > y) != (y2 > y) {
            let xi = x1 + (y - y1) * (x2 - x1) / (y2 - y1);
            if x < xi {
                inside = !inside;
            }
        }
    }
    if inside { 1 } else { -1 }
}

/// `ring` lies within `outer` (every vertex inside or on its edge) and they differ.
fn within(ring: &Ring, outer: &Ring) -> bool {
    ring != outer && ring.iter().all(|&(x, y)| locate(outer, x, y) >= 0)
}

pub(crate) fn is_inside_polygon(lat: f64, lng: f64, perimeter: &str) -> Result<bool> {
    if perimeter.trim().is_empty() {
        return Err(err("Polygon string can't be empty or null!"));
    }
    let json: J = serde_json::from_str(perimeter).map_err(|e| err(e.to_string()))?;
    let J::Array(a) = json else {
        return Err(err(format!("Not a JSON Array: {perimeter}")));
    };
    let mut rings = Vec::new();
    collect_rings(&a, &mut rings)?;
    let holes: Vec<bool> = rings
        .iter()
        .map(|r| rings.iter().any(|o| within(r, o)))
        .collect();
    if holes.iter().all(|h| *h) {
        return Err(err(
            "Error while calculating globalPolygon - the result of all polygons union is null",
        ));
    }
    let in_hole = rings
        .iter()
        .zip(&holes)
        .any(|(r, h)| *h && locate(r, lat, lng) >= 0);
    if in_hole {
        return Ok(false);
    }
    let states: Vec<i32> = rings
        .iter()
        .zip(&holes)
        .filter(|(_, h)| !**h)
        .map(|(r, _)| locate(r, lat, lng))
        .collect();
    // Inside one polygon, or on the shared edge of two adjacent ones.
    Ok(states.contains(&1) || states.iter().filter(|s| **s == 0).count() >= 2)
}

/// Great-circle distance in km (haversine on spatial4j's mean Earth radius).
fn distance_km(lat1: f64, lng1: f64, lat2: f64, lng2: f64) -> f64 {
    const EARTH_MEAN_RADIUS_KM: f64 = 6371.0087714;
    if lat1 == lat2 && lng1 == lng2 {
        return 0.0;
    }
    let (la1, la2) = (lat1.to_radians(), lat2.to_radians());
    let h1 = ((la1 - la2) / 2.0).sin();
    let h2 = ((lng1.to_radians() - lng2.to_radians()) / 2.0).sin();
    let h = h1 * h1 + h2 * h2 * la1.cos() * la2.cos();
    let rad = 2.0 * h.sqrt().min(1.0).atan2((1.0 - h).max(0.0).sqrt());
    rad.to_degrees() * (std::f64::consts::PI / 180.0 * EARTH_MEAN_RADIUS_KM)
}

pub(crate) fn is_inside_circle(lat: f64, lng: f64, perimeter: &str) -> Result<bool> {
    let json: J = serde_json::from_str(perimeter).map_err(|e| err(e.to_string()))?;
    let field = |k: &str| {
        json.get(k).ok_or_else(|| {
            err(format!(
                "Cannot invoke \"com.fasterxml.jackson.databind.JsonNode.asText()\" because the return value of \"com.fasterxml.jackson.databind.JsonNode.get(String)\" is null ({k})"
            ))
        })
    };
    let clat = num(field("latitude")?)?;
    let clng = num(field("longitude")?)?;
    let radius = num(field("radius")?)?;
    let factor = match json.get("radiusUnit") {
        None => 1000.0,
        Some(u) => match u.as_str().unwrap_or("") {
            "METER" => 1000.0,
            "KILOMETER" => 1.0,
            "FOOT" => 3280.84,
            "MILE" => 0.62137,
            "NAUTICAL_MILE" => 0.539957,
            other => {
                return Err(err(format!(
                    "No enum constant org.thingsboard.common.util.geo.RangeUnit.{other}"
                )));
            }
        },
    };
    Ok(radius > distance_km(lat, lng, clat, clng) * factor)
}
