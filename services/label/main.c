/* moda-label — placeholder main until the service lands. */
#include <stdio.h>
int main(void)
{
    puts("moda-label " MODA_VERSION);
    return 0;
}
