//! Which format each part of the model gets: `--quant f32 | f16 | q8 | q4 | mixed`, optionally
//! followed by per-part overrides (`q4,lm_head=q8,embed=f16`).

use super::QFormat;
use crate::error::{Error, Result};
use crate::gpu::DType;

/// int8 as chosen in docs/QUANT.md: one scale per 128 columns.
pub const Q8_DEFAULT: QFormat = QFormat::q8(128);
/// int4 as chosen in docs/QUANT.md: 32 columns per group, scale and offset (0.625 bytes/weight).
pub const Q4_DEFAULT: QFormat = QFormat::q4(32, true);

/// How one weight matrix is stored on the GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    F32,
    F16,
    Q(QFormat),
}

impl Format {
    /// `f32`, `f16`, `q8` and `q4` (the defaults above) or a full quantised name (`q4g32z`).
    pub fn parse(s: &str) -> Result<Format> {
        Ok(match s {
            "f32" => Format::F32,
            "f16" => Format::F16,
            "q8" => Format::Q(Q8_DEFAULT),
            "q4" => Format::Q(Q4_DEFAULT),
            q => Format::Q(QFormat::parse(q).map_err(|_| Error::Invalid(format!("weight format `{q}`: expected f32, f16, q8, q4 or a full name such as q8c, q8g128, q4g64z")))?),
        })
    }

    pub fn name(self) -> String {
        match self {
            Format::F32 => "f32".into(),
            Format::F16 => "f16".into(),
            Format::Q(q) => q.name(),
        }
    }

    /// The dense dtype, or None for a quantised format.
    pub fn dense(self) -> Option<DType> {
        match self {
            Format::F32 => Some(DType::F32),
            Format::F16 => Some(DType::F16),
            Format::Q(_) => None,
        }
    }
}

/// The parts of the model a recipe sets separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Part {
    /// The SigLIP tower's linears (patch embedding included).
    Vision,
    Aligner,
    /// The decoder layers' linears.
    Llm,
    Embed,
    LmHead,
}

impl Part {
    pub const ALL: [Part; 5] = [Part::Vision, Part::Aligner, Part::Llm, Part::Embed, Part::LmHead];

    pub fn name(self) -> &'static str {
        match self {
            Part::Vision => "vision",
            Part::Aligner => "aligner",
            Part::Llm => "llm",
            Part::Embed => "embed",
            Part::LmHead => "lm_head",
        }
    }
}

/// A format per part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recipe {
    pub vision: Format,
    pub aligner: Format,
    pub llm: Format,
    pub embed: Format,
    pub lm_head: Format,
}

impl Recipe {
    pub const fn uniform(f: Format) -> Recipe {
        Recipe { vision: f, aligner: f, llm: f, embed: f, lm_head: f }
    }

    /// The mixed recipe of docs/QUANT.md: int4 decoder layers (most of the bytes read per token),
    /// int8 elsewhere (int4 costs the most accuracy per byte saved in the embedding, the head and
    /// the vision tower).
    pub const fn mixed() -> Recipe {
        Recipe { vision: Format::Q(Q8_DEFAULT), aligner: Format::Q(Q8_DEFAULT), llm: Format::Q(Q4_DEFAULT), embed: Format::Q(Q8_DEFAULT), lm_head: Format::Q(Q8_DEFAULT) }
    }

    pub fn get(&self, p: Part) -> Format {
        match p {
            Part::Vision => self.vision,
            Part::Aligner => self.aligner,
            Part::Llm => self.llm,
            Part::Embed => self.embed,
            Part::LmHead => self.lm_head,
        }
    }

    pub fn set(&mut self, p: Part, f: Format) {
        match p {
            Part::Vision => self.vision = f,
            Part::Aligner => self.aligner = f,
            Part::Llm => self.llm = f,
            Part::Embed => self.embed = f,
            Part::LmHead => self.lm_head = f,
        }
    }

    /// `f32 | f16 | q8 | q4 | mixed | FORMAT`, then `,part=FORMAT` overrides (parts: vision,
    /// aligner, llm, embed, lm_head).
    pub fn parse(s: &str) -> Result<Recipe> {
        let mut it = s.split(',').map(str::trim);
        let base = it.next().unwrap_or_default();
        let mut r = if base == "mixed" { Recipe::mixed() } else { Recipe::uniform(Format::parse(base)?) };
        for o in it {
            let Some((part, fmt)) = o.split_once('=') else {
                return Err(Error::Invalid(format!("quant recipe `{s}`: `{o}` is not part=format")));
            };
            let p = Part::ALL.into_iter().find(|p| p.name() == part.trim()).ok_or_else(|| Error::Invalid(format!("quant recipe `{s}`: unknown part `{part}` (vision, aligner, llm, embed, lm_head)")))?;
            r.set(p, Format::parse(fmt.trim())?);
        }
        Ok(r)
    }

    /// The text `parse` reads back: `mixed`, or the most common format with overrides for the
    /// parts that differ (`q4g32z,embed=f16`).
    pub fn name(&self) -> String {
        if *self == Recipe::mixed() {
            return "mixed".into();
        }
        let count = |f: Format| Part::ALL.iter().filter(|&&p| self.get(p) == f).count();
        let base = Part::ALL.iter().map(|&p| self.get(p)).max_by_key(|&f| (count(f), f == self.llm)).unwrap_or(self.llm);
        let mut s = base.name();
        for p in Part::ALL.into_iter().filter(|&p| self.get(p) != base) {
            s.push_str(&format!(",{}={}", p.name(), self.get(p).name()));
        }
        s
    }

    /// Activations run in f32 for the all-f32 recipe (the parity path), else in f16 where the
    /// adapter has SHADER_F16.
    pub fn act(&self, adapter_f16: bool) -> DType {
        if *self == Recipe::uniform(Format::F32) || !adapter_f16 { DType::F32 } else { DType::F16 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipes_parse_and_print() {
        assert_eq!(Recipe::parse("f16").unwrap(), Recipe::uniform(Format::F16));
        assert_eq!(Recipe::parse("q4").unwrap().llm, Format::Q(Q4_DEFAULT));
        let r = Recipe::parse("q4, lm_head=q8 ,embed=f16").unwrap();
        assert_eq!((r.llm, r.lm_head, r.embed, r.vision), (Format::Q(Q4_DEFAULT), Format::Q(Q8_DEFAULT), Format::F16, Format::Q(Q4_DEFAULT)));
        for r in [r, Recipe::mixed(), Recipe::uniform(Format::F32), Recipe::parse("q4g32").unwrap()] {
            assert_eq!(Recipe::parse(&r.name()).unwrap(), r, "{}", r.name());
        }
        for bad in ["q3", "q4,head=q8", "q4,lm_head", "q4,lm_head=q5", ""] {
            assert!(Recipe::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Recipe::uniform(Format::F32).act(true), DType::F32);
        assert_eq!((Recipe::mixed().act(true), Recipe::mixed().act(false)), (DType::F16, DType::F32));
    }
}
