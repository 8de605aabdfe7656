// Opens tests/clients/page.html (already pointed at a ringwatch address) in headless Chromium
// through playwright-core, waits until the page lists received transition events, and prints
// the list's HTML. Usage: node chromium_page.js FILE_URL PROFILE_DIR
const { chromium } = require("playwright-core");

(async () => {
  const [url, profile] = process.argv.slice(2);
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
  });
  try {
    const page = await ctx.newPage();
    await page.goto(url);
    await page.waitForFunction(
      () => document.querySelectorAll("li.transition").length >= 3,
      null,
      { timeout: 30000 },
    );
    console.log(await page.$eval("#events", (e) => e.outerHTML));
  } finally {
    await ctx.close();
  }
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
