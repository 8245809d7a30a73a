//! HA decisions (filled in next).
