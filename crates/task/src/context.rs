//! The three surface contexts ("templates") and their entity lists (paper spec §2.5).

use serde::{Deserialize, Serialize};

/// A surface context. Serialized with the paper's template ids.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
pub enum Context {
    /// "zoo": locations and adult animals (the dominant context A of the paper).
    #[serde(rename = "crazy_zootopia")]
    Zoo,
    /// "teacher": cities and schools (the long-tail context B).
    #[serde(rename = "teachers_in_school")]
    Teacher,
    /// "movie": festivals and movie genres (only in the composition data).
    #[serde(rename = "movie_festival_awards")]
    Movie,
}

impl Context {
    pub const ALL: [Context; 3] = [Context::Zoo, Context::Teacher, Context::Movie];

    /// The paper's template id.
    pub fn id(self) -> &'static str {
        match self {
            Context::Zoo => "crazy_zootopia",
            Context::Teacher => "teachers_in_school",
            Context::Movie => "movie_festival_awards",
        }
    }

    /// Accepts the template id or the short name (`zoo`, `teacher`, `movie`).
    pub fn parse(s: &str) -> Option<Context> {
        match s {
            "crazy_zootopia" | "zoo" => Some(Context::Zoo),
            "teachers_in_school" | "teacher" => Some(Context::Teacher),
            "movie_festival_awards" | "movie" => Some(Context::Movie),
            _ => None,
        }
    }

    /// Every multi-word name this context writes (entities, item types, aggregate and attribute names).
    pub fn phrases(self) -> Vec<&'static str> {
        let n = self.names();
        let mut out: Vec<&'static str> = n
            .entities
            .iter()
            .chain(n.types)
            .flat_map(|l| l.iter().copied())
            .collect();
        out.extend([n.total, n.average, n.total3]);
        out.retain(|p| p.contains(' '));
        out
    }

    pub(crate) fn names(self) -> &'static ContextNames {
        match self {
            Context::Zoo => &ZOO,
            Context::Teacher => &TEACHER,
            Context::Movie => &MOVIE,
        }
    }
}

/// English names of one context: layer 0 (entities), layer 1 (item types), the aggregate names.
pub(crate) struct ContextNames {
    /// Layer-0 sub-lists; one sub-list is drawn per problem, then entities from it.
    pub entities: &'static [&'static [&'static str]],
    /// Layer-1 sub-lists, drawn the same way.
    pub types: &'static [&'static [&'static str]],
    /// d=2 aggregate: "<total> in <entity>".
    pub total: &'static str,
    /// d=3 attribute: "<average> per <type> in <entity>".
    pub average: &'static str,
    /// d=3 aggregate: "<total3> in <entity>".
    pub total3: &'static str,
}

static ZOO: ContextNames = ContextNames {
    entities: &[
        &[
            "Beverly Forest",
            "Cedar Valley",
            "Oakridge Riverside",
            "Pine Ridge",
            "Maple Creek",
        ],
        &[
            "South Zoo",
            "Jefferson Circus",
            "Mayer Aquarium",
            "Bundle Ranch",
            "Hamilton Farm",
        ],
    ],
    types: &[
        &[
            "adult bear",
            "adult wolf",
            "adult deer",
            "adult fox",
            "adult racoon",
        ],
        &[
            "adult eagle",
            "adult parrot",
            "adult owl",
            "adult blue jay",
            "adult crow",
        ],
    ],
    total: "total number of adult animals",
    average: "average number of newborn children",
    total3: "total number of newborn animal children",
};

static TEACHER: ContextNames = ContextNames {
    entities: &[
        &[
            "Evervale City",
            "Hawkesbury",
            "Glenfield City",
            "Westhaven City",
            "Brightford",
        ],
        &[
            "Riverton City",
            "Clearwater Bay",
            "Shoreline City",
            "Oakbridge City",
            "Ruby Bay",
        ],
    ],
    types: &[&[
        "elementary school",
        "private middle school",
        "public highschool",
        "regional medical school",
        "culinarian school",
    ]],
    total: "total number of schools",
    average: "average number of teachers",
    total3: "total number of teachers from all schools",
};

static MOVIE: ContextNames = ContextNames {
    entities: &[
        &[
            "Taylor Movie Festival",
            "Verdi Movie Festival",
            "West Sahara Movie Festival",
            "Northwood Movie Festival",
            "Golden Banana Movie Festival",
        ],
        &[
            "Festival Lumière de Valmont",
            "Rêves de Belleville",
            "Cinéma de Montreval",
            "Festival de Clairmont",
            "Festival de Saint-Rivage",
        ],
    ],
    types: &[&[
        "upbeat metropolis comedy",
        "solemn period drama",
        "futuristic sci-fi movie",
        "calm road movie",
        "intense detective thriller",
    ]],
    total: "total number of movies",
    average: "average number of nominations",
    total3: "total number of movie nominations",
};
