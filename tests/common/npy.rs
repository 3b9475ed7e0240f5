//! A small `.npy` reader for the test fixtures: format versions 1-3, little-endian C-order arrays of
//! `<f4` (f32), `<i8` (i64) or `<u4` (u32). Include it with `#[path = "common/npy.rs"] mod npy;`.

#![allow(dead_code)] // each test binary uses part of it

use std::path::Path;

/// The element types the fixtures use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F32,
    I64,
    U32,
}

impl Dtype {
    fn from_descr(d: &str) -> Result<Self, String> {
        match d {
            "<f4" => Ok(Dtype::F32),
            "<i8" => Ok(Dtype::I64),
            "<u4" => Ok(Dtype::U32),
            other => Err(format!("unsupported npy dtype {other:?} (want <f4, <i8 or <u4)")),
        }
    }

    pub fn size(self) -> usize {
        match self {
            Dtype::F32 | Dtype::U32 => 4,
            Dtype::I64 => 8,
        }
    }
}

/// A parsed array: shape, dtype and the raw little-endian element bytes.
#[derive(Debug, Clone)]
pub struct Npy {
    pub shape: Vec<usize>,
    pub dtype: Dtype,
    pub data: Vec<u8>,
}

impl Npy {
    pub fn read(path: impl AsRef<Path>) -> Result<Self, String> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
            return Err("not an npy file (bad magic)".into());
        }
        let major = bytes[6];
        let (hlen, start): (usize, usize) = match major {
            1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
            2 | 3 => {
                if bytes.len() < 12 {
                    return Err("truncated npy header".into());
                }
                (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12)
            }
            v => return Err(format!("unsupported npy version {v}")),
        };
        let end = start.checked_add(hlen).filter(|&e| e <= bytes.len()).ok_or("truncated npy header")?;
        let header = std::str::from_utf8(&bytes[start..end]).map_err(|_| "npy header is not UTF-8")?;
        let descr = dict_value(header, "descr")?;
        let descr = descr.trim_matches(|c| c == '\'' || c == '"');
        let dtype = Dtype::from_descr(descr)?;
        if dict_value(header, "fortran_order")? != "False" {
            return Err("Fortran-order npy arrays are not supported".into());
        }
        let shape_s = dict_value(header, "shape")?;
        let shape: Vec<usize> = shape_s
            .trim_matches(|c| c == '(' || c == ')')
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<usize>().map_err(|_| format!("bad npy shape {shape_s:?}")))
            .collect::<Result<_, _>>()?;
        let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or("npy shape overflows")?;
        let nbytes = n.checked_mul(dtype.size()).ok_or("npy size overflows")?;
        let data = &bytes[end..];
        if data.len() != nbytes {
            return Err(format!("npy data is {} bytes, shape {shape:?} {descr} needs {nbytes}", data.len()));
        }
        Ok(Npy { shape, dtype, data: data.to_vec() })
    }

    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn f32(&self) -> Result<Vec<f32>, String> {
        self.expect(Dtype::F32)?;
        Ok(self.data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }

    pub fn i64(&self) -> Result<Vec<i64>, String> {
        self.expect(Dtype::I64)?;
        Ok(self.data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect())
    }

    pub fn u32(&self) -> Result<Vec<u32>, String> {
        self.expect(Dtype::U32)?;
        Ok(self.data.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }

    fn expect(&self, d: Dtype) -> Result<(), String> {
        if self.dtype == d { Ok(()) } else { Err(format!("npy dtype is {:?}, asked for {d:?}", self.dtype)) }
    }
}

/// The raw text of `'key': value` in the header dict (value up to the next top-level comma).
fn dict_value<'a>(header: &'a str, key: &str) -> Result<&'a str, String> {
    let pat = format!("'{key}':");
    let i = header.find(&pat).ok_or_else(|| format!("npy header has no {key:?}"))? + pat.len();
    let rest = header[i..].trim_start();
    let end = if rest.starts_with('(') { rest.find(')').map(|p| p + 1) } else { rest.find([',', '}']) }
        .ok_or_else(|| format!("npy header value for {key:?} is unterminated"))?;
    Ok(rest[..end].trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1(header: &str, data: &[u8]) -> Vec<u8> {
        let mut h = header.to_string();
        while !(10 + h.len() + 1).is_multiple_of(64) {
            h.push(' ');
        }
        h.push('\n');
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend((h.len() as u16).to_le_bytes());
        b.extend(h.as_bytes());
        b.extend(data);
        b
    }

    #[test]
    fn npy_parses_shapes_and_rejects_bad_input() {
        let data: Vec<u8> = [1.5f32, -2.0, 3.25].iter().flat_map(|x| x.to_le_bytes()).collect();
        let a = Npy::parse(&v1("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", &data)).unwrap();
        assert_eq!(a.shape, vec![3]);
        assert_eq!(a.f32().unwrap(), vec![1.5, -2.0, 3.25]);
        let s =
            Npy::parse(&v1("{'descr': '<i8', 'fortran_order': False, 'shape': (), }", &7i64.to_le_bytes())).unwrap();
        assert_eq!((s.shape.len(), s.i64().unwrap()), (0, vec![7]));
        assert!(Npy::parse(&v1("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", &data)).is_err());
        assert!(Npy::parse(&v1("{'descr': '>f4', 'fortran_order': False, 'shape': (3,), }", &data)).is_err());
        assert!(Npy::parse(&v1("{'descr': '<f4', 'fortran_order': True, 'shape': (3,), }", &data)).is_err());
        assert!(Npy::parse(b"\x93NUMPY\x01\x00\xff\xff").is_err());
    }
}
