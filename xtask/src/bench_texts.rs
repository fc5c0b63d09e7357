//! The fixed inputs of `cargo xtask bench vits`.

pub const SHORT: &str = "The quick brown fox jumps over the lazy dog.";

pub const PARAGRAPH: &str = "The old lighthouse keeper climbed the spiral stairs every evening, \
    carrying a lantern and a thermos of strong tea. From the top he could see the fishing boats \
    returning to the harbor, their lights bobbing on the dark water like scattered stars. He \
    counted them one by one, and only when the last boat was safely home did he allow himself to rest.";

/// About 500 words of ordinary English prose.
pub fn page() -> String {
    [
        "On Monday morning the market square filled early. Farmers arrived before dawn with crates of apples, \
         onions and potatoes, and the baker on the corner had already sold half of his bread by seven o'clock. \
         Children walked past on their way to school, stopping to look at the puppies in a basket beside the cheese stall.",
        "Anna had lived in the town for most of her life, and she knew nearly everyone who came through the square. \
         She ran a small bookshop with a green door and a window full of maps. People came in to ask for directions \
         more often than they came in to buy books, but she did not mind. She liked to talk, and she liked to help.",
        "That morning a stranger stepped inside, shaking the rain from his coat. He was tall and thin, with a \
         notebook under one arm and a pencil behind his ear. He said that he was writing a history of the valley \
         and wanted to know where the old mill had stood. Anna smiled, because her grandfather had worked at that mill \
         when he was a young man.",
        "She pulled a folder from a drawer behind the counter and spread its contents across the table. There were \
         photographs of the river in flood, letters written in careful handwriting, and a drawing of the mill wheel \
         with every measurement marked in ink. The stranger leaned closer and began to copy the numbers into his notebook.",
        "They talked for more than an hour. He told her about the other towns he had visited, the libraries where he \
         had searched through old newspapers, and the farmer who had found a millstone buried in his field. She told \
         him about the winter the river froze so hard that people skated all the way to the next village.",
        "When the rain stopped, he thanked her and promised to send a copy of the book when it was finished. Anna \
         watched him cross the square and disappear down the road toward the river. Then she put the folder back in \
         the drawer, made herself a cup of coffee, and opened the shop door to let in the fresh air.",
        "A year later a parcel arrived. Inside was a heavy book with a blue cover and a photograph of the mill on the \
         front. On the first page, in the same careful pencil, he had written a short note thanking the woman with the \
         green door who remembered everything. Anna placed the book in the window, right in the middle of the maps, \
         where everyone who passed could see it.",
        "Years after that, visitors still came into the shop to ask about the mill. Some had read the book and wanted \
         to see the drawing for themselves. Anna always took out the folder, spread the photographs across the table, \
         and told the story again from the beginning, as if it were the first time.",
    ]
    .join(" ")
}

/// `(name, text)` for every case.
pub fn cases(quick: bool) -> Vec<(&'static str, String)> {
    let mut cases = vec![
        ("short", SHORT.to_string()),
        ("paragraph", PARAGRAPH.to_string()),
    ];
    if !quick {
        cases.push(("page", page()));
    }
    cases
}
