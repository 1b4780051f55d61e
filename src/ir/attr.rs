//! Typed access to a node's attributes. Every getter reports a wrong type by name, and
//! `finish` rejects attributes the op parser never read, so an attribute we do not implement
//! can never be silently ignored.

use crate::onnx::{AttributeProto, TensorProto};
use std::cell::RefCell;

pub struct Attrs<'a> {
    list: &'a [AttributeProto],
    used: RefCell<Vec<bool>>,
}

/// Attribute types as numbered in onnx.proto.
mod ty {
    pub const FLOAT: i32 = 1;
    pub const INT: i32 = 2;
    pub const STRING: i32 = 3;
    pub const TENSOR: i32 = 4;
    pub const FLOATS: i32 = 6;
    pub const INTS: i32 = 7;
    pub const STRINGS: i32 = 8;
}

impl<'a> Attrs<'a> {
    pub fn new(list: &'a [AttributeProto]) -> Self {
        Attrs {
            list,
            used: RefCell::new(vec![false; list.len()]),
        }
    }

    fn find(&self, name: &str) -> Option<&'a AttributeProto> {
        let i = self.list.iter().position(|a| a.name() == name)?;
        self.used.borrow_mut()[i] = true;
        Some(&self.list[i])
    }

    fn typed(&self, name: &str, want: i32) -> Result<Option<&'a AttributeProto>, String> {
        match self.find(name) {
            None => Ok(None),
            Some(a) if a.ref_attr_name.is_some() => {
                Err(format!("attribute {name:?} refers to a function attribute"))
            }
            Some(a) => {
                let t = a.r#type.unwrap_or(0);
                // Old exporters leave `type` unset; infer it from which field is filled.
                let t = if t == 0 { infer_type(a) } else { t };
                // An unset type on an empty list says nothing; accept it as the wanted type.
                if t == want || t == 0 {
                    Ok(Some(a))
                } else {
                    Err(format!("attribute {name:?} has type {t}, expected {want}"))
                }
            }
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.list.iter().any(|a| a.name() == name)
    }

    pub fn int_opt(&self, name: &str) -> Result<Option<i64>, String> {
        Ok(self.typed(name, ty::INT)?.map(|a| a.i()))
    }
    pub fn int(&self, name: &str, default: i64) -> Result<i64, String> {
        Ok(self.int_opt(name)?.unwrap_or(default))
    }
    pub fn float_opt(&self, name: &str) -> Result<Option<f32>, String> {
        Ok(self.typed(name, ty::FLOAT)?.map(|a| a.f()))
    }
    pub fn float(&self, name: &str, default: f32) -> Result<f32, String> {
        Ok(self.float_opt(name)?.unwrap_or(default))
    }
    pub fn string_opt(&self, name: &str) -> Result<Option<String>, String> {
        Ok(self
            .typed(name, ty::STRING)?
            .map(|a| String::from_utf8_lossy(a.s()).into_owned()))
    }
    pub fn string(&self, name: &str, default: &str) -> Result<String, String> {
        Ok(self
            .string_opt(name)?
            .unwrap_or_else(|| default.to_string()))
    }
    pub fn ints_opt(&self, name: &str) -> Result<Option<Vec<i64>>, String> {
        Ok(self.typed(name, ty::INTS)?.map(|a| a.ints.clone()))
    }
    pub fn ints(&self, name: &str) -> Result<Vec<i64>, String> {
        Ok(self.ints_opt(name)?.unwrap_or_default())
    }
    pub fn floats_opt(&self, name: &str) -> Result<Option<Vec<f32>>, String> {
        Ok(self.typed(name, ty::FLOATS)?.map(|a| a.floats.clone()))
    }
    pub fn strings_opt(&self, name: &str) -> Result<Option<Vec<String>>, String> {
        Ok(self.typed(name, ty::STRINGS)?.map(|a| {
            a.strings
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        }))
    }
    pub fn tensor_opt(&self, name: &str) -> Result<Option<&'a TensorProto>, String> {
        Ok(self.typed(name, ty::TENSOR)?.and_then(|a| a.t.as_ref()))
    }

    /// Marks attributes that only matter to training or to other runtimes as read.
    pub fn ignore(&self, names: &[&str]) {
        for n in names {
            self.find(n);
        }
    }

    /// Errors on any attribute the parser did not read.
    pub fn finish(&self) -> Result<(), String> {
        let used = self.used.borrow();
        let unread: Vec<&str> = self
            .list
            .iter()
            .zip(used.iter())
            .filter(|(_, u)| !**u)
            .map(|(a, _)| a.name())
            .collect();
        if unread.is_empty() {
            Ok(())
        } else {
            Err(format!("attribute(s) {unread:?} not supported"))
        }
    }
}

fn infer_type(a: &AttributeProto) -> i32 {
    if a.f.is_some() {
        ty::FLOAT
    } else if a.i.is_some() {
        ty::INT
    } else if a.s.is_some() {
        ty::STRING
    } else if a.t.is_some() {
        ty::TENSOR
    } else if !a.floats.is_empty() {
        ty::FLOATS
    } else if !a.ints.is_empty() {
        ty::INTS
    } else if !a.strings.is_empty() {
        ty::STRINGS
    } else {
        0
    }
}
