//! Crafting images by hand (including hostile ones) for tests.
#![allow(dead_code)]
